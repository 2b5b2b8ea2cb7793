"""Several composition problems (bases, backgrounds, prompts, seeds) × cells in one batched step give the results of
their single runs; the nodes' ``batch`` widget."""
import os

import pytest
import torch

from fusedream_pack.fusedream_ops.composition.bilevel import (Cell, CompositionProblem, composition_grid_search,
                                                              composition_grid_searches, optimize_composition,
                                                              optimize_compositions)
from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fusedream.augment import AugmentPolicy
from fusedream_pack.fusedream_ops.fusedream.latents import sample_latents
from fusedream_pack.fusedream_ops.fusedream.objective import AugClipObjective
from fusedream_pack.fusedream_ops.models.lpips import load_lpips

TOLERANCE = 1e-5
"""Batched and single runs differ only by the rounding of batched kernels: measured ≤ 6.3e-7 on latents, images and
scores after 3 and 10 steps on the tiny models (3 problems × 2 cells)."""
LAMBDA_TOLERANCE = 1e-3
"""λ of the barrier, 1 − ⟨∇ℓ, ∇s⟩/‖∇s‖², carries the gradients' rounding times ‖∇ℓ‖/‖∇s‖: measured up to 7.4e-6
after 3 steps and 5.6e-4 (at λ ≈ 0.8) after 10; the latents it moves stay within 6.3e-7."""
STEPS = 3
CELLS = [Cell(0.65, "center"), Cell(0.5, "top-right")]
RUN = dict(lr=0.05, score_draws=1, blend_iterations=30)


def _objective(scorer, prompt):
    return AugClipObjective(scorer, [(prompt, 1.0)], AugmentPolicy(), copies=2)


@pytest.fixture(scope="module")
def lpips(tiny_models):
    return load_lpips("alex", os.path.join(tiny_models, "lpips", "alexnet-owt-7be5be79.pth"))


def _latent_problems(generator, scorer):
    return [CompositionProblem(sample_latents(generator, 3, 1), sample_latents(generator, 3, 2),
                               _objective(scorer, "an elephant on a roof"), seed=5),
            CompositionProblem(sample_latents(generator, 2, 3), sample_latents(generator, 3, 4),
                               _objective(scorer, "a dog on the grass"), seed=6),
            CompositionProblem(sample_latents(generator, 3, 1), sample_latents(generator, 3, 2),
                               _objective(scorer, "an elephant on a roof"), seed=7)]


def _max_difference(got, want):
    pairs = [(got.foreground_latent.z, want.foreground_latent.z), (got.foreground_latent.y, want.foreground_latent.y),
             (got.fused, want.fused), (got.blended, want.blended), (got.augclip, want.augclip),
             (got.lpips, want.lpips), (got.history["augclip"], want.history["augclip"]),
             (got.history["lpips"], want.history["lpips"])]
    if got.background_latent is not None:
        pairs.append((got.background_latent.z, want.background_latent.z))
    assert torch.allclose(got.history["lambda"], want.history["lambda"], rtol=0, atol=LAMBDA_TOLERANCE)
    return max((a - b).abs().max().item() for a, b in pairs)


def _check_against_single_runs(generator, problems, lpips, results, **options):
    worst = 0.0
    for problem, got in zip(problems, results):
        for i, cell in enumerate(CELLS):
            want = optimize_composition(generator, problem.foreground, problem.background, problem.objective, lpips,
                                        [cell], steps=STEPS, seed=problem.seed, **RUN, **options)
            one = got.select(slice(i, i + 1))
            assert one.best_step == want.best_step
            worst = max(worst, _max_difference(one, want))
    assert worst <= TOLERANCE
    return worst


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_a_batch_of_problems_and_cells_gives_each_its_single_run(tiny_generator, tiny_scorer, lpips, mode):
    problems = _latent_problems(tiny_generator, tiny_scorer)
    results = optimize_compositions(tiny_generator, problems, lpips, CELLS, steps=STEPS, mode=mode, **RUN)
    assert [len(r.cells) for r in results] == [2, 2, 2]
    worst = _check_against_single_runs(tiny_generator, problems, lpips, results, mode=mode)
    print(f"max |batched - single| {worst:.2e}")
    assert not torch.allclose(results[0].fused, results[2].fused, atol=1e-3), "seeds must matter"


def test_fixed_background_images_batch_too(tiny_generator, tiny_scorer, lpips):
    g = torch.Generator().manual_seed(0)
    problems = [CompositionProblem(sample_latents(tiny_generator, 2, s), torch.rand(1, 3, 40, 36, generator=g),
                                   _objective(tiny_scorer, "a red boat"), seed=s) for s in (1, 2)]
    results = optimize_compositions(tiny_generator, problems, lpips, CELLS, steps=STEPS, **RUN)
    assert results[0].background_latent is None and results[0].fused.shape == (2, 3, 40, 36)
    _check_against_single_runs(tiny_generator, problems, lpips, results)


def test_the_grid_search_gives_the_same_cells_whatever_cells_per_batch(tiny_generator, tiny_scorer, lpips):
    p = _latent_problems(tiny_generator, tiny_scorer)[0]
    cells = CELLS + [Cell(0.5, "bottom-left"), Cell(0.65, "top-left")]
    one = composition_grid_search(tiny_generator, p.foreground, p.background, p.objective, lpips, cells, 1,
                                  steps=STEPS, seed=p.seed, **RUN)
    three = composition_grid_search(tiny_generator, p.foreground, p.background, p.objective, lpips, cells, 3,
                                    steps=STEPS, seed=p.seed, **RUN)
    assert one.best_step == three.best_step and one.best == three.best
    assert _max_difference(one, three) <= TOLERANCE


def test_grid_searches_return_each_problems_best_cell(tiny_generator, tiny_scorer, lpips):
    problems = _latent_problems(tiny_generator, tiny_scorer)[:2]
    results = composition_grid_searches(tiny_generator, problems, lpips, CELLS, cells_per_batch=1, steps=STEPS, **RUN)
    for p, got in zip(problems, results):
        want = composition_grid_search(tiny_generator, p.foreground, p.background, p.objective, lpips, CELLS, 2,
                                       steps=STEPS, seed=p.seed, **RUN)
        assert got.best == want.best and _max_difference(got, want) <= TOLERANCE


def test_problems_that_cannot_share_a_batch_are_refused_before_any_step(tiny_generator, tiny_scorer, lpips):
    import copy

    latents = _latent_problems(tiny_generator, tiny_scorer)
    image = CompositionProblem(latents[0].foreground, torch.rand(1, 3, 32, 32), latents[0].objective)
    other_size = CompositionProblem(latents[0].foreground, torch.rand(1, 3, 40, 32), latents[0].objective)
    other_clip = CompositionProblem(latents[0].foreground, latents[0].background,
                                    _objective(copy.copy(tiny_scorer), "x"))
    truncated = CompositionProblem(sample_latents(tiny_generator, 2, 0, truncation=0.5),
                                   sample_latents(tiny_generator, 2, 1, truncation=0.5), latents[0].objective)
    for pair, message in [([latents[0], image], "all generate their backgrounds or all use fixed"),
                          ([image, other_size], "of one size"),
                          ([latents[0], other_clip], "share one CLIP model"),
                          ([latents[0], truncated], "share one truncation"),
                          ([], "no problems")]:
        with pytest.raises(FuseDreamError, match=message):
            optimize_compositions(tiny_generator, pair, lpips, CELLS, steps=1)


# ---------------------------------------------------------------- the nodes' batch widget
NODE = dict(steps=2, lr=0.05, score_draws=1, blend_iterations=30, seed=4)


def test_the_optimizer_node_returns_one_image_per_seed_of_its_batch(tiny_generator, tiny_scorer, lpips):
    from testkit.workflows import run_node

    p = _latent_problems(tiny_generator, tiny_scorer)[0]
    out = run_node("FuseDreamCompositionOptimizer", generator=tiny_generator, objective=p.objective, lpips=lpips,
                   foreground=p.foreground, background=p.background, scale=0.5, position="top-left", batch=2, **NODE)
    blended, fused, fg, bg, mask, augclip, lpips_value, fg_latent, bg_latent, _ = out["result"]
    assert blended.shape == fused.shape == fg.shape == bg.shape == (2, 32, 32, 3) and mask.shape == (2, 32, 32)
    assert len(fg_latent) == len(bg_latent) == 2
    options = dict(steps=2, lr=0.05, score_draws=1, blend_iterations=30)
    second = optimize_composition(tiny_generator, p.foreground, p.background, p.objective, lpips,
                                  [Cell(0.5, "top-left")], seed=5, **options)
    first = optimize_composition(tiny_generator, p.foreground, p.background, p.objective, lpips,
                                 [Cell(0.5, "top-left")], seed=4, **options)
    assert torch.allclose(fused[1], second.fused[0].permute(1, 2, 0), atol=TOLERANCE)
    assert torch.allclose(bg_latent.z[1:], second.background_latent.z, atol=TOLERANCE)
    assert augclip == pytest.approx(max(first.augclip.item(), second.augclip.item()), abs=TOLERANCE)


def test_the_grid_search_node_returns_each_seeds_best_cell_in_seed_order(tiny_generator, tiny_scorer, lpips):
    from testkit.workflows import run_node

    p = _latent_problems(tiny_generator, tiny_scorer)[1]
    out = run_node("FuseDreamCompositionGridSearch", generator=tiny_generator, objective=p.objective, lpips=lpips,
                   foreground=p.foreground, background=p.background, scales="0.65, 0.5", positions="center, top-left",
                   cells_per_batch=4, batch=2, **{**NODE, "seed": 1})
    (blended, fused, fg, bg, mask, scale, position, augclip, lpips_value, candidates, candidates_blended, lines,
     _) = out["result"]
    assert blended.shape == fused.shape == (2, 32, 32, 3) and candidates.shape == candidates_blended.shape == \
        (8, 32, 32, 3)
    singles = [composition_grid_search(tiny_generator, p.foreground, p.background, p.objective, lpips,
                                       [Cell(s, q) for s in (0.65, 0.5) for q in ("center", "top-left")], 1,
                                       steps=2, lr=0.05, score_draws=1, blend_iterations=30, seed=seed)
               for seed in (1, 2)]
    assert singles[0].best != singles[1].best, "the test needs seeds whose best cells differ"
    for i, single in enumerate(singles):
        assert torch.allclose(fused[i], single.fused[single.best].permute(1, 2, 0), atol=TOLERANCE)
        assert torch.allclose(candidates[4 * i:4 * i + 4], single.fused.permute(0, 2, 3, 1), atol=TOLERANCE)
    leader = max(singles, key=lambda r: r.augclip.max().item())
    assert (scale, position) == (leader.cells[leader.best].scale, leader.cells[leader.best].position)
    assert augclip == pytest.approx(leader.augclip.max().item(), abs=TOLERANCE)
    blocks = lines.split("seed ")[1:]
    assert [b.splitlines()[0] for b in blocks] == ["1:", "2:"] and all(b.count("*") == 1 for b in blocks)
