"""FuseDream-Composition's claims on the composition toy world, at a CI-sized budget.

Runs on the committed fixtures (``tests/fixtures/toyworld/composition``, rebuilt by
``python -m fusedream_ops.toyworld.build_composition``); the full rows are ``python benchmarks/toyworld_claims.py
--only composition``. Budget: 4 held-out two-object captions × seed 0, M = 64, 20 steps per cell, the grid
α ∈ {0.65, 0.5} × the 4 edge-centre positions (the captions put their objects in edge-centre cells); margins come
from the measured spread written in each test.
"""
import os

import pytest
import torch

from fusedream_pack.fusedream_ops.composition.bilevel import Cell
from fusedream_pack.fusedream_ops.composition.geometry import fuse
from fusedream_pack.fusedream_ops.toyworld import claims_composition as cc
from fusedream_pack.fusedream_ops.toyworld import world
from testkit import ROOT
from testkit.workflows import load, run_node, widget_inputs, workflow_problems

TEMPLATE = os.path.join(ROOT, "example_workflows", "Toy world – composition.json")
EDGES = ("top-center", "center-left", "center-right", "bottom-center")
CI_BUDGET = cc.CompositionBudget(candidates=64, steps=20, copies=8, eval_copies=16, positions=EDGES,
                                 cells_per_batch=8, score_draws=2)


def _fixtures():
    from fusedream_pack.fusedream_ops.toyworld.composition_world import COMPOSITION_FIXTURES

    return COMPOSITION_FIXTURES


@pytest.fixture(scope="module")
def comp_world():
    from fusedream_pack.fusedream_ops.toyworld.composition_world import load_composition_world

    return load_composition_world()


@pytest.fixture(scope="module")
def runs(comp_world):
    """The rows on 4 captions × seed 0, and every composition result (for the ranking test)."""
    results = {}
    scores = cc.compare_composition(comp_world, cc.held_out_captions(4), [0], CI_BUDGET, results=results)
    return {k: v.summary() for k, v in scores.items()}, results


def test_read_objects_counts_a_dropped_object_as_half_found(comp_world):
    scenes = world.sample_scenes(16, 4242, two_object_fraction=1.0)
    read = cc.read_objects(comp_world.judge, scenes.images, scenes.labels)
    # the judge reads 93.5 % of two-object world scenes exactly (build report); 13 of these 16
    assert read["exact"].float().mean() >= 0.75 and read["colour_and_cell"].float().mean() >= 0.75
    one = scenes.labels.clone()
    one[torch.arange(16), (one > 0).float().argmax(-1)] = 0  # the caption names one object of the two …
    shown = cc.read_objects(comp_world.judge, scenes.images, one)  # … so the other is an extra object: no success
    assert not shown["exact"].any() and not shown["colour_and_cell"].any()
    single = world.sample_scenes(16, 4243)  # one object where the caption wants two: half found at best
    pairs = cc.read_objects(comp_world.judge, single.images, scenes.labels)
    assert pairs["found"].max() <= 0.5 and not pairs["colour_and_cell"].any()


def test_the_seam_is_the_step_across_the_paste_box_border():
    background = torch.full((1, 3, 32, 32), 0.2)
    foreground = torch.full((1, 3, 32, 32), 0.7)
    cell = Cell(0.5, "center")
    assert torch.allclose(cc.seam(fuse(foreground, background, 0.5, "center"), [cell]), torch.tensor([0.5]))
    assert cc.seam(fuse(background, background, 0.5, "center"), [cell]).item() == 0


def test_composition_keeps_two_objects_where_single_image_generation_drops_one(runs):
    """Fig. 9. The toy generator draws one object per image (as BigGAN draws one class), so one image shows at most
    one of the caption's two objects; Alg. 2 pastes a second. Measured here: objects found 50 % vs 0 %, colour+cell
    25 % vs 0 %. Sabotage: ``fuse`` returning the background (foreground never pasted) → fails."""
    rows, _ = runs
    assert rows["grid"]["found"] > rows["single"]["found"] + 0.25
    assert rows["grid"]["colour_and_cell"] > rows["single"]["colour_and_cell"]


def test_the_lpips_term_lowers_l_fuse_far_below_augclip_alone(runs):
    """Eq. 5: the bi-level step lowers ℓ_Fuse compared with the same runs on AugCLIP alone. Measured here: 0.073 vs
    0.235 (ratio 0.31), and 0.103 vs 0.205 (0.50) after the CLIP's QuickGELU and attention were fused (float-level
    changes that move 20-step runs this much); with the LPIPS gradient dropped from ``set_combined_grad_`` 0.264 vs
    0.275 (0.96) → fails. The seam at the paste border is not asserted: lower at the benchmark's budget (0.212 vs
    0.250 on the fused image) but not at this one (0.153 vs 0.130; see docs/toyworld_composition.md)."""
    rows, _ = runs
    assert rows["grid"]["lpips"] < 0.75 * rows["augclip_only"]["lpips"]


def test_poisson_blending_lowers_the_seam_and_keeps_the_objects(runs):
    """Measured here: seam 0.027 blended vs 0.153 fused, objects found 50 % both. Sabotage: ``blend_cells``
    returning the fused image → fails."""
    rows, _ = runs
    assert rows["grid"]["seam"] < 0.7 * rows["grid_fused"]["seam"]
    assert rows["grid"]["found"] >= rows["grid_fused"]["found"] - 0.125


def test_the_grid_search_keeps_a_cell_the_judge_reads_better_than_the_average_cell(runs, comp_world):
    """Alg. 2 keeps the cell with the highest AugCLIP. Measured here: objects found in the kept cell 50 % vs 14 % in
    the average cell. Sabotage: ``CompositionResult.best`` = argmin → fails."""
    _, results = runs
    kept, every = [], []
    for (row, caption, _), result in results.items():
        if row != "grid":
            continue
        labels = dict(cc.held_out_captions(4))[caption]
        found = cc.read_objects(comp_world.judge, result.blended, labels)["found"]
        kept.append(float(found[result.best]))
        every.append(float(found.mean()))
    assert sum(kept) / len(kept) > sum(every) / len(every) + 0.1


def _values(node):
    return [v for v in node["widgets_values"] if v not in ("fixed", "increment", "decrement", "randomize")]


def test_the_toy_world_composition_template_is_valid_and_runs_on_the_fixtures(comp_world, tiny_models):
    """The template as saved is valid and runs on the fixtures, and its fused and Poisson-blended outputs each show
    at least one object of its caption. Whether one run places *both* objects is decided by float-level differences
    between CPUs' kernels: the template's seed was picked on an AVX-512 CPU, where its fused output had both, and on
    this project's AVX2 CPU (AMD EPYC, 2026-12-03) it has one, as do the next three grid seeds. The claim itself is
    a rate over held-out captions and seeds, asserted by the row tests above (about 44 % of single runs place both;
    docs/toyworld_composition.md)."""
    from fusedream_pack.nodes import NODE_CLASS_MAPPINGS, comfy

    workflow = load(TEMPLATE)
    comfy.set_fallback_model_root(_fixtures())
    try:
        assert workflow_problems(workflow, NODE_CLASS_MAPPINGS) == []
        nodes = {n["id"]: n for n in workflow["nodes"]}
        widgets = {i: dict(zip([name for name, _, _ in widget_inputs(NODE_CLASS_MAPPINGS[n["type"]])], _values(n)))
                   for i, n in nodes.items() if n["type"] in NODE_CLASS_MAPPINGS}
        by_type = {}
        for i, n in sorted(nodes.items()):
            by_type.setdefault(n["type"], []).append(i)

        def one(node_type, i=0, **inputs):
            return run_node(node_type, **widgets[by_type[node_type][i]], **inputs)["result"]

        (generator,) = one("FuseDreamBigGANLoader")
        (clip,) = one("FuseDreamCLIPLoader")
        (objective,) = one("FuseDreamAugCLIPObjective", clip=clip)
        bases = [one("FuseDreamTopK", i, generator=generator, objective=objective,
                     candidates=one("FuseDreamLatentSampler", i, generator=generator)[0])[0] for i in (0, 1)]
        (lpips,) = one("FuseDreamLPIPSLoader")
        blended, fused = one("FuseDreamCompositionGridSearch", generator=generator, objective=objective,
                             lpips=lpips, foreground=bases[0], background=bases[1])[:2]
    finally:
        comfy.set_fallback_model_root(tiny_models)
    prompt = widgets[by_type["FuseDreamAugCLIPObjective"][0]]["prompt"]
    assert blended.shape == (1, comp_world.image_size, comp_world.image_size, 3)
    labels = _caption_labels(prompt)
    assert torch.isfinite(fused).all() and torch.isfinite(blended).all()
    assert cc.read_objects(comp_world.judge, fused.permute(0, 3, 1, 2), labels)["found"].item() >= 0.5
    assert cc.read_objects(comp_world.judge, blended.permute(0, 3, 1, 2), labels)["found"].item() >= 0.5


def _caption_labels(caption: str) -> torch.Tensor:
    labels = torch.zeros(world.NUM_CELLS, dtype=torch.long)
    for phrase in caption.split(" and "):
        for klass in range(world.NUM_CLASSES):
            for cell in range(world.NUM_CELLS):
                if world.object_phrase(klass, cell) == phrase:
                    labels[cell] = klass + 1
    assert (labels > 0).sum() == 2, caption
    return labels
