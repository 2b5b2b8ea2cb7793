"""FuseDream-Composition on tiny real models: the optimizer, the grid search (Alg. 2), LPIPS loading, the nodes."""
import os
import pathlib

import pytest
import torch

from fusedream_pack.fusedream_ops.composition.bilevel import (Cell, composition_grid_search, optimize_composition,
                                                              paper_grid, parse_grid)
from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.core.progress import Step
from fusedream_pack.fusedream_ops.fixtures import biggan_clip
from fusedream_pack.fusedream_ops.fusedream.augment import AugmentPolicy
from fusedream_pack.fusedream_ops.fusedream.objective import AugClipObjective
from fusedream_pack.fusedream_ops.models.lpips import BACKBONE_FILES, find_backbone, load_lpips
from fusedream_pack.nodes.composition import (CompositionGridSearch, CompositionOptimizer, FuseCrop, LPIPSDistance,
                                              LPIPSLoader, PoissonBlend)
from fusedream_pack.nodes.fusedream import AugCLIPObjectiveNode, BigGANLoader, CLIPLoader, LatentSampler, TopKInit

NO_VIEWS = dict(color=False, translation=False, resize=False, cutout=False)
FAST = dict(lr=0.05, method="bilevel", beta=1.0, linear_lambda=0.5, mode="paper", latent_noise=0.01,
            optimize_y=True, seed=0, score_draws=2, blend_iterations=500)


@pytest.fixture(scope="module")
def models_dir(tiny_models):
    return pathlib.Path(tiny_models)


@pytest.fixture(scope="module")
def nodes(models_dir):
    with torch.inference_mode():
        generator = BigGANLoader().load(biggan_clip.BIGGAN_NAME)[0]
        clip = CLIPLoader().load("auto", biggan_clip.CLIP_NAME)[0]
        objective = AugCLIPObjectiveNode().build(clip, "an elephant on top of a roof", 2, True, True, True, True)[0]
        lpips = LPIPSLoader().load("alex")[0]
        fg = LatentSampler().sample(generator, 3, 1, "clamp", 1.0, "")[0]
        bg = LatentSampler().sample(generator, 3, 2, "clamp", 1.0, "")[0]
    return dict(generator=generator, objective=objective, lpips=lpips, foreground=fg, background=bg)


def _op_args(nodes):
    return (nodes["generator"], nodes["foreground"], nodes["background"], nodes["objective"], nodes["lpips"])


# ---------------------------------------------------------------- the optimizer
def test_optimizer_reports_fused_image_and_both_series_every_step_and_keeps_the_best_iterate(nodes):
    steps: list[Step] = []
    r = optimize_composition(*_op_args(nodes), [Cell(0.65, "center")], steps=3, lr=0.05, score_draws=2,
                             on_step=steps.append)
    assert [s.step for s in steps] == [1, 2, 3] and all(s.total == 3 for s in steps)
    assert all(set(s.values) == {"augclip", "lpips"} and s.image.shape == (1, 3, 32, 32) for s in steps)
    history = r.history["augclip"][:, 0]
    assert history[r.best_step[0] - 1] == history.max()
    assert r.fused.shape == r.blended.shape == r.foreground.shape == r.background.shape == (1, 3, 32, 32)
    assert r.masks.shape == (1, 1, 32, 32) and r.masks.sum() == 21 * 21
    assert len(r.foreground_latent) == len(r.background_latent) == 1
    outside = r.masks[0, 0] < 0.5
    assert torch.allclose(r.blended[0][:, outside], r.background[0][:, outside].clamp(0, 1))


def test_same_seed_reproduces_and_another_seed_differs(nodes):
    run = lambda seed: optimize_composition(*_op_args(nodes), [Cell(0.5, "top-right")], steps=2, lr=0.05,
                                            seed=seed, score_draws=1, blend_iterations=50).fused
    a, b, c = run(4), run(4), run(5)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_a_raising_callback_cancels_the_run(nodes):
    def cancel(step):
        if step.step == 2:
            raise InterruptedError

    with pytest.raises(InterruptedError):
        optimize_composition(*_op_args(nodes), [Cell(0.5, "center")], steps=5, on_step=cancel)


def test_latents_of_different_truncation_are_refused(nodes):
    from dataclasses import replace

    bg = replace(nodes["background"], truncation=0.5)
    with pytest.raises(FuseDreamError, match="different truncation"):
        optimize_composition(nodes["generator"], nodes["foreground"], bg, nodes["objective"], nodes["lpips"],
                             [Cell(0.5, "center")], steps=1)


# ---------------------------------------------------------------- the grid search (Alg. 2)
def test_grid_search_over_the_papers_18_cells_returns_the_best_cell_and_every_candidate(nodes):
    progress: list[Step] = []
    r = composition_grid_search(*_op_args(nodes), cells_per_batch=18, steps=1, lr=0.05, score_draws=2,
                                blend_iterations=200, on_step=progress.append)
    assert r.cells == paper_grid() and len(r.cells) == 18
    assert r.fused.shape == r.blended.shape == (18, 3, 32, 32)
    assert r.best == int(r.augclip.argmax())
    # the ranking is the objective of each cell's FUSED image (not of the foreground or the blend): with the views
    # switched off the objective is deterministic, so the reported scores must be the fused images' cosines exactly
    objective = nodes["objective"]
    plain = AugClipObjective(objective.scorer, objective.prompts, AugmentPolicy(**NO_VIEWS))
    p = composition_grid_search(*_op_args({**nodes, "objective": plain}), cells_per_batch=18, steps=1, lr=0.05,
                                score_draws=1, blend_iterations=10)
    with torch.no_grad():
        fused, alone = plain.cosine(p.fused), plain.cosine(p.foreground)
    assert torch.allclose(p.augclip, fused, atol=1e-5) and not torch.allclose(p.augclip, alone, atol=1e-3)
    assert p.best == int(fused.argmax())
    assert len(set(r.augclip.tolist())) > 1  # the cells really differ
    assert [s.step for s in progress] == [1]


def test_grid_search_in_batches_counts_progress_over_all_cells(nodes):
    progress: list[Step] = []
    cells = parse_grid("0.65, 0.5", "top-left, bottom-right")
    r = composition_grid_search(*_op_args(nodes), cells, cells_per_batch=3, steps=2, lr=0.05, score_draws=1,
                                blend_iterations=100, on_step=progress.append)
    assert [(s.step, s.total) for s in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert r.cells == cells and r.history["augclip"].shape == (2, 4)


def test_parse_grid_reads_scales_and_positions():
    assert parse_grid("0.65,0.5", "all") == paper_grid()
    assert parse_grid(" 0.3 ", "center, top-left") == [Cell(0.3, "center"), Cell(0.3, "top-left")]


@pytest.mark.parametrize("scales,positions,message", [
    ("1.2", "all", "strictly between 0 and 1"),
    ("0", "all", "strictly between 0 and 1"),
    ("", "all", "scales is empty"),
    ("big", "all", "comma-separated numbers"),
    ("0.5", "middle", "position must be one of"),
    ("0.5", "", "positions is empty"),
    ("0.5, 0.5", "center", "twice"),
])
def test_bad_grids_are_clear_errors(scales, positions, message):
    with pytest.raises(FuseDreamError, match=message):
        parse_grid(scales, positions)


# ---------------------------------------------------------------- LPIPS
def test_lpips_backbone_is_found_under_torchvisions_file_name_and_loaded_strictly(models_dir):
    path = find_backbone("alex", [str(models_dir / "lpips")])
    assert os.path.basename(path) == "alexnet-owt-7be5be79.pth"
    loaded = load_lpips("alex", path)
    state = torch.load(path, weights_only=True)
    assert torch.equal(loaded.model.net.slice1[0].weight, state["features.0.weight"])
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.all(loaded(a, b) > 0) and torch.allclose(loaded(a, a), torch.zeros(2), atol=1e-6)


def test_missing_backbone_names_the_file_the_url_and_the_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(FuseDreamError, match=r"vgg16-397923af\.pth.*download\.pytorch\.org.*models/lpips.*"
                                             r"torch_home/hub/checkpoints"):
        find_backbone("vgg", [str(tmp_path / "models/lpips")])


def test_backbone_found_in_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / BACKBONE_FILES["alex"][0]).write_bytes(b"")
    assert find_backbone("alex", [str(tmp_path / "nowhere")]) == str(cache / BACKBONE_FILES["alex"][0])


def test_a_truncated_or_foreign_backbone_is_an_error_naming_the_tensors(tmp_path, models_dir):
    state = torch.load(models_dir / "lpips" / BACKBONE_FILES["alex"][0], weights_only=True)
    del state["features.10.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(FuseDreamError, match=r"missing.*slice5\.10\.weight"):
        load_lpips("alex", str(tmp_path / "cut.pth"))
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "foreign.pth")
    with pytest.raises(FuseDreamError, match="unexpected tensors something.else"):
        load_lpips("alex", str(tmp_path / "foreign.pth"))


def test_lpips_needs_a_backbone_unless_a_random_one_is_asked_for_explicitly():
    with pytest.raises(FuseDreamError, match="alexnet-owt-7be5be79.pth"):
        load_lpips("alex")
    with pytest.raises(FuseDreamError, match="alex, vgg"):
        load_lpips("squeeze", random_backbone=True)


# ---------------------------------------------------------------- the nodes, as ComfyUI runs them
def test_whole_composition_workflow_runs_through_the_nodes_inside_inference_mode(nodes):
    with torch.inference_mode():
        fg_basis = TopKInit().select(nodes["generator"], nodes["foreground"], nodes["objective"], 2, False, 10, 0)
        bg_basis = TopKInit().select(nodes["generator"], nodes["background"], nodes["objective"], 2, False, 10, 1)
        out = CompositionGridSearch().search(
            nodes["generator"], nodes["objective"], nodes["lpips"], fg_basis["result"][0], "0.65, 0.5",
            "center, bottom-left", 2, 2, **FAST, preview_every=1, keep_frames_every=1, background=bg_basis["result"][0],
            unique_id="7")
    (blended, fused, fg, bg, mask, scale, position, augclip, lpips, candidates, candidates_blended, lines,
     frames) = out["result"]
    assert blended.shape == fused.shape == fg.shape == bg.shape == (1, 32, 32, 3)
    assert candidates.shape == candidates_blended.shape == (4, 32, 32, 3)
    assert mask.shape == (1, 32, 32)
    rows = lines.splitlines()
    scores = [float(r.split("augclip ")[1].split(",")[0]) for r in rows]
    best = max(range(4), key=lambda i: scores[i])
    assert rows[best].startswith("*") and f"{scale:g} {position}:" in rows[best]
    assert augclip == pytest.approx(scores[best], abs=1e-4)
    assert torch.equal(fused[0], candidates[best])
    assert frames.shape == (4, 32, 32, 3)
    series = out["ui"]["fusedream_series"][0]
    assert series["steps"] == [1, 2, 3, 4] and set(series["series"]) == {"augclip", "lpips"}
    # the chart's per-batch progress (docs/monitor.md): 2 steps per batch of 2 cells, in grid order
    assert series["segment"] == {"unit": "batch", "size": 2, "labels": ["0.65 center +1", "0.5 center +1"]}
    topk_series = fg_basis["ui"]["fusedream_series"][0]  # kept in the history: a cached Top-k still shows its chart
    assert topk_series["label"] == "top-k" and topk_series["steps"] and topk_series["series"]


def test_composition_optimizer_node_for_one_cell(nodes):
    with torch.inference_mode():
        out = CompositionOptimizer().optimize(
            nodes["generator"], nodes["objective"], nodes["lpips"], nodes["foreground"], 0.5, "bottom-right", 2,
            **FAST, background=nodes["background"], unique_id="3")
    blended, fused, fg, bg, mask, augclip, lpips, fg_latent, bg_latent, frames = out["result"]
    assert blended.shape == (1, 32, 32, 3) and mask[0, 16:, 16:].all() and not mask[0, :16].any()
    assert isinstance(augclip, float) and lpips >= 0
    assert len(fg_latent) == 1 and frames.shape == (1, 32, 32, 3)


def test_fuse_crop_and_poisson_nodes_work_on_comfyui_images():
    g = torch.Generator().manual_seed(0)
    fg, bg = torch.rand(1, 20, 24, 3, generator=g), torch.rand(2, 40, 30, 3, generator=g)
    with torch.inference_mode():
        fused, crop, layer, mask = FuseCrop().fuse(fg, bg, 0.5, "center-right")
        blended = PoissonBlend().blend(layer, bg, mask, 2000, 1e-6)[0]
    assert fused.shape == layer.shape == blended.shape == (2, 40, 30, 3)
    assert crop.shape == (2, 20, 15, 3) and mask.shape == (2, 40, 30)
    assert torch.equal(crop, bg[:, 10:30, 15:30])
    assert torch.equal(blended[:, ~mask[0].bool()], bg[:, ~mask[0].bool()])


def test_poisson_node_refuses_mismatched_sizes_and_an_empty_mask():
    fg, bg = torch.rand(1, 16, 16, 3), torch.rand(1, 16, 18, 3)
    with torch.inference_mode():
        with pytest.raises(FuseDreamError, match="same channels and size"):
            PoissonBlend().blend(fg, bg, torch.ones(1, 16, 16), 10, 1e-5)
        with pytest.raises(FuseDreamError, match="mask is empty"):
            PoissonBlend().blend(fg, fg, torch.zeros(1, 16, 16), 10, 1e-5)


def test_lpips_distance_node(nodes):
    a = torch.rand(2, 32, 32, 3)
    with torch.inference_mode():
        out = LPIPSDistance().distance(a, a[:1], nodes["lpips"])
    distance, text = out["result"]
    assert text.startswith("0.0000, ") and distance > 0


def test_lpips_module_accepts_the_device_attribute_comfyuis_model_patcher_sets(nodes):
    nodes["lpips"].device = torch.device("cpu")  # ModelPatcher.unpatch_model does model.device = device_to
    assert nodes["lpips"].device == torch.device("cpu")


def test_a_fixed_background_image_of_another_size_moves_only_the_foreground(nodes):
    photo = torch.rand(1, 48, 40, 3, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        out = CompositionOptimizer().optimize(
            nodes["generator"], nodes["objective"], nodes["lpips"], nodes["foreground"], 0.5, "center-left", 2,
            **FAST, background_image=photo, unique_id="4")
    blended, fused, fg, bg, mask, augclip, lpips, fg_latent, bg_latent, frames = out["result"]
    assert fused.shape == blended.shape == (1, 48, 40, 3) and fg.shape == (1, 32, 32, 3)
    assert bg_latent is None and len(fg_latent) == 1
    outside = ~mask[0].bool()
    assert torch.allclose(fused[0][outside], photo[0][outside]) and torch.allclose(bg, photo)
    assert torch.allclose(blended[0][outside], photo[0][outside])


def test_exactly_one_background_must_be_connected(nodes):
    with torch.inference_mode():
        with pytest.raises(FuseDreamError, match="exactly one of 'background'"):
            CompositionGridSearch().search(nodes["generator"], nodes["objective"], nodes["lpips"], nodes["foreground"],
                                           "0.5", "center", 1, 1, **FAST)
        with pytest.raises(FuseDreamError, match="exactly one of 'background'"):
            CompositionOptimizer().optimize(nodes["generator"], nodes["objective"], nodes["lpips"],
                                            nodes["foreground"], 0.5, "center", 1, **FAST,
                                            background=nodes["background"], background_image=torch.rand(1, 8, 8, 3))
