"""Which iterate a composition cell returns (``keep``): the rules on known scores, and the optimizer returning the
iterate its rule names."""
import random

import pytest
import torch

from fusedream_pack.fusedream_ops.composition.bilevel import Cell, optimize_composition
from fusedream_pack.fusedream_ops.composition.iterate_choice import KEEP_MODES, kept_step
from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fusedream.augment import AugmentPolicy
from fusedream_pack.fusedream_ops.fusedream.latents import sample_latents
from fusedream_pack.fusedream_ops.fusedream.objective import AugClipObjective
from fusedream_pack.fusedream_ops.models.lpips import load_lpips

# step:       1     2     3     4     5      6
SCORES = [0.10, 0.30, 0.29, 0.20, 0.295, 0.28]
LOSSES = [0.10, 0.90, 0.50, 0.01, 0.40, 0.30]


def test_augclip_keeps_the_highest_draw_and_last_keeps_the_final_step():
    assert kept_step(SCORES, LOSSES, "augclip") == 2
    assert kept_step(SCORES, LOSSES, "last") == 6
    assert kept_step([0.2, 0.3, 0.3], [0.5, 0.4, 0.1], "augclip") == 2  # ties: the earliest


def test_eq5_keeps_the_lowest_lpips_among_draws_within_the_tolerance_of_the_highest():
    # eligible at 0.015: steps 2, 3, 5 (≥ 0.285); step 4 has the lowest LPIPS but a low AugCLIP, step 6 is just out
    assert kept_step(SCORES, LOSSES, "eq5", 0.015) == 5
    assert kept_step(SCORES, LOSSES, "eq5", 0.0) == 2
    assert kept_step(SCORES, LOSSES, "eq5", 1.0) == 4
    # a later, higher draw raises the bar: step 2 was eligible when it came, not at the end
    assert kept_step([0.30, 0.29, 0.32, 0.31], [0.9, 0.1, 0.5, 0.3], "eq5", 0.015) == 4


def _eq5_by_definition(scores, losses, tolerance):
    top = max(scores)
    eligible = [i for i, s in enumerate(scores) if s >= top - tolerance]
    return min(eligible, key=lambda i: (losses[i], i)) + 1


def test_eq5_online_pruning_agrees_with_the_definition_on_random_runs():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 40)
        trend = rng.choice([0.0, 0.01, -0.005])
        scores = [round(trend * i + rng.gauss(0, 0.02), 2) for i in range(n)]  # rounded: ties happen
        losses = [round(rng.random(), 1) for _ in range(n)]
        tolerance = rng.choice([0.0, 0.01, 0.03, 0.1])
        assert kept_step(scores, losses, "eq5", tolerance) == _eq5_by_definition(scores, losses, tolerance)


@pytest.mark.parametrize("keep,tolerance,message", [("best", 0.01, "keep must be one of augclip, last, eq5"),
                                                     ("eq5", -0.1, "keep_tolerance must be at least 0")])
def test_bad_keep_options_are_clear_errors(keep, tolerance, message):
    with pytest.raises(FuseDreamError, match=message):
        kept_step([0.1], [0.1], keep, tolerance)


# ---------------------------------------------------------------- the optimizer returns the named iterate
@pytest.fixture(scope="module")
def setup(tiny_generator, tiny_scorer, tiny_models):
    import os

    lpips = load_lpips("alex", os.path.join(tiny_models, "lpips", "alexnet-owt-7be5be79.pth"))
    objective = AugClipObjective(tiny_scorer, [("an elephant on top of a roof", 1.0)], AugmentPolicy(), copies=2)
    return (tiny_generator, sample_latents(tiny_generator, 3, 1), sample_latents(tiny_generator, 3, 2), objective,
            lpips)


CELLS = [Cell(0.65, "center"), Cell(0.5, "bottom-left")]
STEPS = 6
RUN = dict(lr=0.1, latent_noise=0.0, seed=3, score_draws=1, blend_iterations=20)


@pytest.mark.parametrize("keep", KEEP_MODES)
def test_each_cell_returns_the_iterate_its_keep_rule_names(setup, keep):
    """Without latent noise ℓ_Fuse of an iterate is deterministic, so the returned images' LPIPS must be the one
    recorded at ``best_step`` (both images enter it: the foreground and the background crop under it)."""
    tolerance = 0.05 if keep == "eq5" else 0.0
    r = optimize_composition(*setup, CELLS, steps=STEPS, keep=keep, keep_tolerance=tolerance, **RUN)
    lpips = r.history["lpips"]
    assert len(set(lpips[:, 0].tolist())) == STEPS, "every step must have its own LPIPS for this test to tell"
    for i in range(len(CELLS)):
        want = kept_step(r.history["augclip"][:, i].tolist(), lpips[:, i].tolist(), keep, tolerance)
        assert r.best_step[i] == want
        assert r.lpips[i].item() == pytest.approx(lpips[want - 1, i].item(), abs=1e-6)
    if keep == "last":
        assert r.best_step == [STEPS] * len(CELLS)


def test_the_keep_rules_pick_different_iterates_of_one_trajectory(setup):
    runs = {keep: optimize_composition(*setup, CELLS, steps=STEPS, keep=keep, keep_tolerance=1.0, **RUN)
            for keep in KEEP_MODES}
    assert torch.equal(runs["augclip"].history["augclip"], runs["eq5"].history["augclip"])  # keep only picks
    lpips = runs["eq5"].history["lpips"]
    assert runs["eq5"].best_step == [int(lpips[:, i].argmin()) + 1 for i in range(len(CELLS))]
    assert runs["augclip"].best_step != runs["last"].best_step or runs["eq5"].best_step != runs["last"].best_step


def test_the_nodes_take_keep_as_an_advanced_widget():
    from fusedream_pack.nodes.composition import CompositionGridSearch, CompositionOptimizer

    for node in (CompositionOptimizer, CompositionGridSearch):
        inputs = node.INPUT_TYPES()["required"]
        assert list(inputs["keep"][0]) == list(KEEP_MODES) and inputs["keep"][1]["advanced"]
        assert inputs["keep_tolerance"][1]["advanced"] and inputs["keep"][1]["tooltip"]


def test_the_optimizer_node_passes_keep_to_the_op(setup):
    from testkit.workflows import run_node

    generator, fg, bg, objective, lpips = setup
    runs = {keep: optimize_composition(*setup, CELLS[:1], steps=STEPS, keep=keep, **RUN) for keep in ("augclip", "last")}
    assert runs["augclip"].best_step != runs["last"].best_step, "the test needs two rules that pick different steps"
    fused = run_node("FuseDreamCompositionOptimizer", generator=generator, objective=objective, lpips=lpips,
                     foreground=fg, background=bg, scale=CELLS[0].scale, position=CELLS[0].position, steps=STEPS,
                     keep="last", **RUN)["result"][1]
    assert torch.allclose(fused[0], runs["last"].fused[0].permute(1, 2, 0), atol=1e-6)
