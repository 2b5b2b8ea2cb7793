"""CLIPAG generator-free synthesis: dynamic thresholding, crops, init images and the pixel optimisation itself."""
import pytest
import torch
from PIL import Image

from fusedream_pack.fusedream_ops.clipag.init_images import (SmallImageGaussians, best_gaussian_samples, best_matches,
                                                             load_reference_groups, noise_images, parse_color)
from fusedream_pack.fusedream_ops.clipag.synthesis import (PixelSynthesisSettings, clip_grad_norm_per_image,
                                                           random_crops, synthesize_pixels)
from fusedream_pack.fusedream_ops.clipag.thresholding import dynamic_threshold, image_quantile
from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fixtures.biggan_clip import TINY_CLIP_CONFIG, tiny_clip
from fusedream_pack.fusedream_ops.fusedream.augment import AugmentPolicy
from fusedream_pack.fusedream_ops.fusedream.objective import AugClipObjective
from fusedream_pack.fusedream_ops.models.clip import load_clip, save_clip

FAST = dict(steps=12, views=4, patches=2)


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny.safetensors"
    return load_clip("auto", save_clip(tiny_clip(seed=1), str(path), TINY_CLIP_CONFIG))


@pytest.fixture(scope="module")
def objective(scorer):
    return AugClipObjective(scorer, [("a red circle", 1.0)], AugmentPolicy(signed_range=False), copies=4)


@pytest.fixture(scope="module")
def steady_objective(scorer):
    """Without DiffAugment, so a few steps of a random tiny CLIP move the score far beyond the noise."""
    policy = AugmentPolicy(color=False, translation=False, resize=False, cutout=False, signed_range=False)
    return AugClipObjective(scorer, [("a red circle", 1.0)], policy, copies=2)


# ---------------------------------------------------------------- dynamic thresholding
def test_image_quantile_matches_torch_quantile():
    x = torch.rand(3, 3, 7, 5, generator=torch.Generator().manual_seed(0))
    for q in (0.0, 0.5, 0.95, 1.0):
        assert torch.allclose(image_quantile(x, q), torch.quantile(x.flatten(1), q, dim=1))


def test_dynamic_threshold_follows_its_formula_per_image():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.3  # overshoots both ends
    x[1] = x[1] * 0.5 + 0.25  # the second image stays inside [0, 1]
    out = dynamic_threshold(x, 0.95)
    for i in range(2):
        u = x[i] * 2 - 1
        s = max(torch.quantile(u.abs().flatten(), 0.95).item(), 1.0)
        assert torch.allclose(out[i], (u.clamp(-s, s) / s + 1) / 2, atol=1e-6)
    assert out[0].min() >= 0 and out[0].max() <= 1
    assert torch.allclose(out[1], x[1], atol=1e-6), "an image inside [0, 1] is left as it is"
    assert out[0].max() == 1.0 and out[0].min() == 0.0, "the 95 % quantile pixel lands on the bound"


def test_dynamic_threshold_shrinks_towards_grey_instead_of_clipping():
    x = torch.full((1, 3, 10, 10), 0.75)
    x[..., :, :] = torch.linspace(0.2, 1.4, 100).view(1, 1, 10, 10)
    out = dynamic_threshold(x, 0.5)
    assert out.max() == 1.0 and (out < 1.0).sum() > (x < 1.0).sum() - 1
    assert torch.equal(dynamic_threshold(x, None), x.clamp(0, 1))


# ---------------------------------------------------------------- crops and clipping
def test_random_crops_at_their_own_size_are_exact_windows_of_each_image():
    b, h, w, side = 2, 12, 10, 4
    x = torch.arange(b * 3 * h * w, dtype=torch.float32).view(b, 3, h, w)
    crops = random_crops(x, 5, side, (side, side), torch.Generator().manual_seed(0))
    assert crops.shape == (b * 5, 3, side, side)
    for n in range(b * 5):
        image = n // 5
        flat = round(crops[n, 0, 0, 0].item()) - image * 3 * h * w
        top, left = divmod(flat, w)
        assert torch.allclose(crops[n], x[image, :, top:top + side, left:left + side], atol=1e-3)


def test_gradient_clipping_bounds_each_image_on_its_own():
    g = torch.stack([torch.full((3, 4, 4), 1.0), torch.full((3, 4, 4), 1e-6)])
    small = g[1].clone()
    clip_grad_norm_per_image(g, 0.001)
    assert g[0].norm().item() == pytest.approx(0.001, rel=1e-4)
    assert torch.equal(g[1], small)


# ---------------------------------------------------------------- init images
def test_parse_color_reads_hex_and_rgb_and_names_bad_input():
    assert parse_color("#ff8000") == (1.0, 128 / 255, 0.0)
    assert parse_color("0, 255, 51") == (0.0, 1.0, 0.2)
    with pytest.raises(FuseDreamError, match="color 'orange'"):
        parse_color("orange")


def _write_colour_folder(folder, colours, n=4):
    folder.mkdir(parents=True)
    for i in range(n):
        for name, rgb in colours.items():
            jitter = tuple(min(255, c + 10 * i) for c in rgb)
            Image.new("RGB", (20, 24), jitter).save(folder / f"{name}_{i}.png")


def test_reference_gaussians_one_per_subfolder_sample_their_class_colours(tmp_path):
    _write_colour_folder(tmp_path / "ref" / "reds", {"r": (200, 20, 20)})
    _write_colour_folder(tmp_path / "ref" / "blues", {"b": (20, 20, 200)})
    groups = load_reference_groups(str(tmp_path / "ref"), 16)
    assert [g.shape for g in groups] == [(4, 3, 16, 16)] * 2
    gaussians = SmallImageGaussians.fit(groups, 16)
    samples = gaussians.sample(4, 32, torch.Generator().manual_seed(0))
    assert samples.shape == (4, 3, 32, 32) and samples.min() >= 0 and samples.max() <= 1
    means = samples.mean(dim=(2, 3))
    assert (means[0::2, 2] > 0.6).all() and (means[1::2, 0] > 0.6).all(), "classes alternate: blues, reds"


def test_reference_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(FuseDreamError, match="is not a folder"):
        load_reference_groups(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FuseDreamError, match="no class with at least 2 images"):
        load_reference_groups(str(tmp_path / "empty"))


def test_best_matches_picks_the_highest_clip_scores(objective):
    pool = torch.rand(7, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        order = objective.cosine(pool).argsort(descending=True)
    assert torch.equal(best_matches(objective, pool, 3, chunk=2), pool[order[:3]])


def test_best_gaussian_samples_keep_the_best_of_all_chunks(objective):
    gaussians = SmallImageGaussians.fit([torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(3))], 16)
    picked = best_gaussian_samples(objective, gaussians, 9, 32, 2, seed=4, chunk=4)
    every = gaussians.sample(9, 32, torch.Generator().manual_seed(4))  # the same draws, unchunked
    with torch.no_grad():
        top = every[objective.cosine(every).topk(2).indices]
    assert torch.allclose(picked, top, atol=1e-5)


# ---------------------------------------------------------------- the optimisation
def test_synthesis_raises_the_objective(steady_objective):
    init = noise_images(2, 32, torch.Generator().manual_seed(0))
    result = synthesize_pixels(steady_objective, init, PixelSynthesisSettings(**FAST))
    with torch.no_grad():
        before, after = steady_objective.cosine(init), steady_objective.cosine(result.image)
    assert (after > before + 0.2).all(), (before, after)
    assert result.history[-1] > result.history[0] + 0.2


def test_synthesis_with_the_authors_augmentations_stays_in_unit_range(objective):
    init = noise_images(2, 32, torch.Generator().manual_seed(0))
    seen = []
    result = synthesize_pixels(objective, init, PixelSynthesisSettings(**FAST, lr=0.2), on_step=seen.append)
    assert result.image.shape == init.shape and result.image.min() >= 0 and result.image.max() <= 1
    assert all(s.image.min() >= 0 and s.image.max() <= 1 for s in seen)
    assert not torch.equal(seen[-1].image.cpu(), init), "the pixels moved"
    assert [s.step for s in seen] == list(range(1, 13)) and set(seen[0].values) == {"clip", "patch_clip"}


def test_synthesis_returns_the_best_iterate(objective):
    result = synthesize_pixels(objective, noise_images(1, 32, torch.Generator().manual_seed(5)),
                               PixelSynthesisSettings(**FAST, lr=0.2))
    assert result.best_score.item() == pytest.approx(max(result.history), abs=1e-6)
    assert result.best_step.item() == result.history.index(max(result.history)) + 1


def test_synthesis_seed_reproduces_and_another_seed_differs(objective):
    init = noise_images(1, 32, torch.Generator().manual_seed(6))
    run = [synthesize_pixels(objective, init, PixelSynthesisSettings(steps=3, views=2, patches=2, seed=s)).image
           for s in (1, 1, 2)]
    assert torch.equal(run[0], run[1])
    assert not torch.equal(run[0], run[2])


def test_images_larger_than_the_model_input_are_optimised_too(objective):
    result = synthesize_pixels(objective, noise_images(1, 48, torch.Generator().manual_seed(7)),
                               PixelSynthesisSettings(steps=2, views=2, patches=2))
    assert result.image.shape == (1, 3, 48, 48)


def test_cancel_from_the_callback_stops_the_run(objective):
    def cancel(step):
        if step.step == 2:
            raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        synthesize_pixels(objective, noise_images(1, 32, torch.Generator().manual_seed(0)),
                          PixelSynthesisSettings(**FAST), on_step=cancel)
