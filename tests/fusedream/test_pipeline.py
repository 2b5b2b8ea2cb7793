"""Top-k initialisation, the basis optimizer and the single-image pipeline on tiny models."""
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fusedream.augment import AugmentPolicy
from fusedream_pack.fusedream_ops.fusedream.basis import LatentBasis
from fusedream_pack.fusedream_ops.fusedream.latents import sample_latents
from fusedream_pack.fusedream_ops.fusedream.objective import AugClipObjective
from fusedream_pack.fusedream_ops.fusedream.optimize import optimize_basis
from fusedream_pack.fusedream_ops.fusedream.topk import topk_latents
from fusedream_pack.fusedream_ops.models.biggan import load_biggan
from fusedream_pack.fusedream_ops.models.imagenet_classes import parse_class_list


@pytest.fixture(scope="module")
def objective(tiny_scorer):
    return AugClipObjective(tiny_scorer, [("a photo of a blue dog", 1.0)], AugmentPolicy(), copies=4)


def test_topk_keeps_the_k_best_scores(tiny_generator, objective):
    candidates = sample_latents(tiny_generator, 23, seed=4)
    basis, scores = topk_latents(tiny_generator, candidates, objective, k=5, chunk=4)
    with torch.no_grad():
        every = objective.cosine(tiny_generator.decode(candidates))
    best = every.topk(5)
    assert torch.allclose(scores, best.values, atol=1e-5)
    assert torch.equal(basis.z, candidates.z[best.indices]) and torch.equal(basis.labels, candidates.labels[best.indices])


def test_topk_memory_is_bounded_by_the_chunk(tiny_generator, objective, monkeypatch):
    sizes = []
    real = tiny_generator.decode
    monkeypatch.setattr(tiny_generator, "decode", lambda latent: sizes.append(len(latent)) or real(latent))
    topk_latents(tiny_generator, sample_latents(tiny_generator, 50, seed=0), objective, k=3, chunk=8)
    assert max(sizes) == 8 and sum(sizes) == 50


@pytest.mark.parametrize("k", [0, 11])
def test_k_outside_one_to_m_is_refused(tiny_generator, objective, k):
    with pytest.raises(FuseDreamError, match=r"k must be between 1 and the number of candidates \(10\)"):
        topk_latents(tiny_generator, sample_latents(tiny_generator, 10, seed=0), objective, k=k)


@pytest.mark.parametrize("count", [0, -3])
def test_no_candidates_is_refused(tiny_generator, count):
    with pytest.raises(FuseDreamError, match="candidates must be at least 1"):
        sample_latents(tiny_generator, count, seed=0)


def test_sampled_z_stays_within_two_and_y_is_a_class_embedding(tiny_generator):
    for mode in ("clamp", "truncated_normal"):
        latents = sample_latents(tiny_generator, 500, seed=1, z_mode=mode)
        assert latents.z.abs().max() <= 2.0
    latents = sample_latents(tiny_generator, 20, seed=1, classes=[207, 281])
    assert set(latents.labels.tolist()) <= {207, 281}
    assert torch.equal(latents.y, tiny_generator.class_embedding(latents.labels).detach())


def test_an_unknown_class_name_suggests_close_ones(tiny_generator):
    assert parse_class_list("golden retriever, 281", tiny_generator.class_names, 1000) == [207, 281]
    with pytest.raises(FuseDreamError, match="no class named 'golden retreiver'.*golden retriever"):
        parse_class_list("golden retreiver", tiny_generator.class_names, 1000)
    with pytest.raises(FuseDreamError, match="0..999"):
        parse_class_list("1000", tiny_generator.class_names, 1000)


def test_paper_basis_starts_at_the_mean_of_the_basis_vectors(tiny_generator):
    latents = sample_latents(tiny_generator, 4, seed=2)
    z, y = LatentBasis(latents, "paper")()
    assert torch.allclose(z[0], latents.z.mean(0).clamp(-2, 2)) and torch.allclose(y[0], latents.y.mean(0))


def _basis(generator, objective):
    return topk_latents(generator, sample_latents(generator, 20, seed=3), objective, k=3)[0]


def test_the_optimizer_raises_the_objective(tiny_generator, objective):
    basis = _basis(tiny_generator, objective)
    result = optimize_basis(tiny_generator, basis, objective, steps=25, lr=0.05, seed=0)
    start = tiny_generator.decode(LatentBasis(basis).latent()).detach()
    before = objective.mean_score(start, draws=8, seed=9)
    after = objective.mean_score(result.image, draws=8, seed=9)
    assert after > before
    assert result.history[result.best_step - 1] == max(result.history) and len(result.history) == 25


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_the_same_seed_gives_the_same_image_and_another_seed_another(tiny_generator, objective, mode):
    basis = _basis(tiny_generator, objective)
    run = lambda seed: optimize_basis(tiny_generator, basis, objective, steps=4, mode=mode, seed=seed).image
    first, again, other = run(1), run(1), run(2)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_cancel_stops_within_one_step(tiny_generator, objective):
    seen = []

    def on_step(step):
        seen.append(step.step)
        if step.step == 3:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        optimize_basis(tiny_generator, _basis(tiny_generator, objective), objective, steps=50, on_step=on_step)
    assert seen == [1, 2, 3]


def test_the_optimizer_reports_progress_values_and_the_current_image(tiny_generator, objective):
    steps = []
    optimize_basis(tiny_generator, _basis(tiny_generator, objective), objective, steps=3, on_step=steps.append)
    assert [s.step for s in steps] == [1, 2, 3] and all(s.total == 3 for s in steps)
    assert all("augclip" in s.values and s.image.shape == (1, 3, 32, 32) for s in steps)


def test_a_non_finite_objective_stops_with_an_error(tiny_models, objective, tmp_path):
    import shutil

    folder = str(tmp_path / "broken")
    shutil.copytree(os.path.join(tiny_models, "biggan", "biggan-deep-256"), folder)
    state = load_file(os.path.join(folder, "model.safetensors"))
    state["generator.conv_to_rgb.bias"] = torch.full_like(state["generator.conv_to_rgb.bias"], float("nan"))
    save_file(state, os.path.join(folder, "model.safetensors"))
    broken = load_biggan(folder)
    basis = sample_latents(broken, 2, seed=0)
    with pytest.raises(FuseDreamError, match="non-finite"):
        optimize_basis(broken, basis, objective, steps=3)


def test_zero_steps_or_copies_are_refused_naming_the_input(tiny_generator, tiny_scorer, objective):
    basis = sample_latents(tiny_generator, 2, seed=0)
    with pytest.raises(FuseDreamError, match="steps must be at least 1, got 0"):
        optimize_basis(tiny_generator, basis, objective, steps=0)
    with pytest.raises(FuseDreamError, match="copies must be at least 1, got 0"):
        AugClipObjective(tiny_scorer, [("a dog", 1.0)], copies=0)
