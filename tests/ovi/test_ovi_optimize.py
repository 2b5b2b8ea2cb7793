"""OVI: pseudo-tokens through the real (tiny) CLIP vision tower, optimized toward the text embedding."""
import pytest
import torch
import torch.nn.functional as F

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.core.progress import Step
from fusedream_pack.fusedream_ops.ovi import optimize as ovi
from fusedream_pack.fusedream_ops.ovi.reference_stats import build_reference_stats
from testkit import kandinsky_models as km

STEPS = 50


def smooth_images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=32, mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def target():
    return km.encoders().encode_text(["blue old car on a beach"]).text_embeds


@pytest.fixture(scope="module")
def stats():
    return build_reference_stats(km.encoders().encode_images(smooth_images(24, seed=5)))


@pytest.fixture(scope="module")
def free_run(target):
    return ovi.optimize_ovi(km.encoders().image_encoder, target, num_tokens=2, steps=STEPS, lr=0.1, seed=0)


def test_patch_entry_of_real_patch_embeddings_reproduces_the_image_embedding():
    tower = km.encoders().image_encoder
    pixels = torch.randn(2, 3, 32, 32)
    patches = tower.vision_model.embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2)
    assert torch.allclose(ovi.embed_pseudo_tokens(tower, patches, "patches"),
                          tower(pixel_values=pixels).image_embeds, atol=1e-5)


def test_bare_entry_differs_from_patch_entry():
    tower = km.encoders().image_encoder
    tokens = torch.randn(1, 3, 32)
    assert not torch.allclose(ovi.embed_pseudo_tokens(tower, tokens, "patches"),
                              ovi.embed_pseudo_tokens(tower, tokens, "bare"))


def test_ovi_raises_cosine_monotonically_on_average_and_beats_the_random_start(free_run):
    h = free_run.history["cosine"]
    windows = [sum(h[i:i + 10]) / 10 for i in range(0, STEPS, 10)]
    assert all(b > a for a, b in zip(windows, windows[1:])), windows
    assert free_run.best_cosine > free_run.start_cosine + 0.15


def test_more_pseudo_tokens_reach_a_higher_similarity(target, free_run):
    one_token = ovi.optimize_ovi(km.encoders().image_encoder, target, num_tokens=1, steps=STEPS, lr=0.1, seed=0)
    assert free_run.best_cosine > one_token.best_cosine + 0.03  # paper Fig. 2: more tokens, higher plateau


def test_result_is_the_best_iterate_and_its_cosine_is_reported(free_run, target):
    e = free_run.image_embeds
    assert e.shape == (1, target.shape[1]) and e.dtype == torch.float32
    assert F.cosine_similarity(e, target).item() == pytest.approx(free_run.best_cosine, abs=1e-5)
    assert free_run.best_cosine == pytest.approx(max(free_run.history["cosine"]), abs=1e-6)


def test_embedding_stays_unnormalized_like_a_prior_output(free_run):
    assert abs(free_run.image_embeds.norm().item() - 1.0) > 0.1


def test_mahalanobis_constraint_pulls_toward_the_reference_mean(target, stats, free_run):
    constrained = ovi.optimize_ovi(km.encoders().image_encoder, target, 2, STEPS, 0.1, 0, stats, lambda_m=0.009)
    assert stats.mahalanobis(constrained.image_embeds).item() < 0.7 * stats.mahalanobis(free_run.image_embeds).item()
    assert constrained.best_cosine < free_run.best_cosine
    assert "mahalanobis" in constrained.history


def test_large_mahalanobis_weight_collapses_to_the_mean(target, stats, free_run):
    collapsed = ovi.optimize_ovi(km.encoders().image_encoder, target, 2, STEPS, 0.1, 0, stats, lambda_m=0.05)
    mean = stats.mean[None]
    assert F.cosine_similarity(collapsed.image_embeds, mean).item() > 0.97
    assert stats.mahalanobis(collapsed.image_embeds).item() < 0.1 * stats.mahalanobis(free_run.image_embeds).item()


def test_nearest_neighbour_constraint_pulls_toward_the_nearest_reference(target, stats, free_run):
    constrained = ovi.optimize_ovi(km.encoders().image_encoder, target, 2, STEPS, 0.1, 0, stats, lambda_n=0.5)
    assert stats.nearest_cosine(constrained.image_embeds).item() > stats.nearest_cosine(free_run.image_embeds).item()
    assert "nn_cosine" in constrained.history


def test_same_seed_reproduces_and_another_seed_differs(target):
    tower = km.encoders().image_encoder
    a = ovi.optimize_ovi(tower, target, 1, 5, 0.1, seed=3).image_embeds
    b = ovi.optimize_ovi(tower, target, 1, 5, 0.1, seed=3).image_embeds
    c = ovi.optimize_ovi(tower, target, 1, 5, 0.1, seed=4).image_embeds
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_each_step_reports_the_cosine_without_an_image_and_a_raising_callback_cancels(target):
    seen = []

    def on_step(step: Step):
        seen.append(step)
        if step.step == 3:
            raise InterruptedError

    with pytest.raises(InterruptedError):
        ovi.optimize_ovi(km.encoders().image_encoder, target, 1, 10, 0.1, 0, on_step=on_step)
    assert [s.step for s in seen] == [1, 2, 3] and all(s.total == 10 for s in seen)
    assert all("cosine" in s.values and s.image is None for s in seen)


def test_a_half_precision_tower_optimizes_too(target):
    from fusedream_pack.fusedream_ops.models.kandinsky import load_encoders

    half = load_encoders(km.prior_folder(), dtype=torch.float16).image_encoder
    result = ovi.optimize_ovi(half, target, 2, 20, 0.1, seed=0)
    assert result.image_embeds.dtype == torch.float32
    assert result.best_cosine > result.start_cosine + 0.1


def test_runs_when_called_inside_inference_mode_like_a_comfyui_node(target):
    with torch.inference_mode():
        result = ovi.optimize_ovi(km.encoders().image_encoder, target.clone(), 1, 3, 0.1, 0)
    assert torch.isfinite(result.image_embeds).all()


@pytest.mark.parametrize("kwargs,message", [
    ({"num_tokens": 0}, "num_tokens must be 1..8"),
    ({"num_tokens": 9}, "num_tokens must be 1..8"),
    ({"lambda_m": 0.01}, "need reference statistics"),
    ({"lambda_n": 0.5}, "need reference statistics"),
    ({"token_entry": "middle"}, "token_entry must be one of"),
    ({"steps": 0}, "steps must be at least 1"),
])
def test_bad_settings_are_clear_errors(target, kwargs, message):
    with pytest.raises(FuseDreamError, match=message):
        ovi.optimize_ovi(km.encoders().image_encoder, target, **{"steps": 2, **kwargs})


def test_text_embedding_of_another_width_is_refused():
    with pytest.raises(FuseDreamError, match="text embedding has 1280 values but the image encoder projects to 32"):
        ovi.optimize_ovi(km.encoders().image_encoder, torch.randn(1, 1280), steps=1)


def test_reference_statistics_of_another_width_are_refused(target):
    other = build_reference_stats(torch.randn(4, 16))
    with pytest.raises(FuseDreamError, match="reference statistics have 16 dimensions"):
        ovi.optimize_ovi(km.encoders().image_encoder, target, steps=1, stats=other, lambda_n=0.5)
