"""DiffAugment and the AugCLIP objective (FuseDream eq. 3)."""
import pytest
import torch

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fusedream.augment import AugmentPolicy, diff_augment
from fusedream_pack.fusedream_ops.fusedream.objective import AugClipObjective, parse_prompts

ONLY = dict(color=False, translation=False, resize=False, cutout=False)


def _images(n=4, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_the_same_generator_seed_gives_the_same_augmentations():
    x = _images()
    a = diff_augment(x, AugmentPolicy(), torch.Generator().manual_seed(5))
    b = diff_augment(x, AugmentPolicy(), torch.Generator().manual_seed(5))
    c = diff_augment(x, AugmentPolicy(), torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_every_copy_gets_its_own_random_draws():
    x = _images(1).repeat(8, 1, 1, 1)
    for policy in (AugmentPolicy(**{**ONLY, "resize": True}), AugmentPolicy(**{**ONLY, "color": True}),
                   AugmentPolicy(**{**ONLY, "cutout": True})):
        out = diff_augment(x, policy, torch.Generator().manual_seed(0))
        assert len({tuple(o.flatten()[:64].tolist()) for o in out}) > 4, policy


def test_translation_shifts_by_whole_pixels_and_pads_mid_grey():
    x = _images(16, size=16)
    out = diff_augment(x, AugmentPolicy(**{**ONLY, "translation": True}), torch.Generator().manual_seed(1))
    for src, dst in zip(x, out):
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = torch.full_like(src, 0.5)
                ys, yd = (slice(0, 16 - dy), slice(dy, 16)) if dy >= 0 else (slice(-dy, 16), slice(0, 16 + dy))
                xs, xd = (slice(0, 16 - dx), slice(dx, 16)) if dx >= 0 else (slice(-dx, 16), slice(0, 16 + dx))
                shifted[:, yd, xd] = src[:, ys, xs]
                found |= torch.allclose(shifted, dst, atol=1e-5)
        assert found


def test_cutout_greys_out_a_square_of_half_the_side():
    x = torch.ones(6, 3, 16, 16)
    out = diff_augment(x, AugmentPolicy(**{**ONLY, "cutout": True}), torch.Generator().manual_seed(2))
    grey = (out[:, 0] == 0.5)
    for mask in grey:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert rows.numel() <= 8 and cols.numel() <= 8 and mask.sum() == rows.numel() * cols.numel() > 0


def test_augmentation_is_differentiable_in_the_image():
    x = _images().requires_grad_()
    diff_augment(x, AugmentPolicy(), torch.Generator().manual_seed(0)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_prompts_parse_weights_and_negative_prompts():
    assert parse_prompts("a blue dog\n\nblurry : -0.5\nratio 16:9 photo") == [
        ("a blue dog", 1.0), ("blurry", -0.5), ("ratio 16:9 photo", 1.0)]


@pytest.mark.parametrize("text", ["", "   \n ", ":2", "a dog:0"])
def test_empty_or_weightless_prompts_are_refused(text):
    with pytest.raises(FuseDreamError, match=r"\[FuseDream\] prompt"):
        parse_prompts(text)


def test_text_is_encoded_once_and_all_copies_go_through_clip_in_one_call(tiny_scorer, monkeypatch):
    objective = AugClipObjective(tiny_scorer, [("a red circle", 1.0)], AugmentPolicy(), copies=6)
    calls = []
    real = tiny_scorer.model.encode_image
    monkeypatch.setattr(tiny_scorer.model, "encode_text", lambda *a, **k: pytest.fail("text encoded again"))
    monkeypatch.setattr(tiny_scorer.model, "encode_image", lambda x, **k: calls.append(x.shape[0]) or real(x, **k))
    scores = objective.score(_images(3, size=32), torch.Generator().manual_seed(0))
    assert scores.shape == (3,) and calls == [18]


def test_score_averages_the_cosine_over_copies_and_weights_prompts(tiny_scorer):
    images = _images(2, size=32)
    one = AugClipObjective(tiny_scorer, [("a red circle", 1.0)], AugmentPolicy(**ONLY), copies=1)
    two = AugClipObjective(tiny_scorer, [("a red circle", 1.0), ("a blue square", -0.5)], AugmentPolicy(**ONLY))
    neg = AugClipObjective(tiny_scorer, [("a blue square", 1.0)], AugmentPolicy(**ONLY))
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(
            tiny_scorer.encode_images(images), tiny_scorer.encode_text(["a red circle"]))
        assert torch.allclose(one.score(images), cos, atol=1e-5)
        assert torch.allclose(two.score(images), one.score(images) - 0.5 * neg.score(images), atol=1e-5)


def test_backward_reaches_the_image_and_no_weight(tiny_scorer):
    objective = AugClipObjective(tiny_scorer, [("a red circle", 1.0)], copies=4)
    x = _images(1, size=32).requires_grad_()
    objective.score(x, torch.Generator().manual_seed(0)).sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_scorer.model.parameters())
