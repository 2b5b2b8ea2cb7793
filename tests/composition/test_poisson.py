"""Poisson blending: background outside, foreground gradients inside, identity when already seamless, errors."""
import pytest
import torch
import torch.nn.functional as F

from fusedream_pack.fusedream_ops.composition.geometry import foreground_layer, paste_mask
from fusedream_pack.fusedream_ops.composition.poisson import guidance_laplacian, poisson_blend
from fusedream_pack.fusedream_ops.core.errors import FuseDreamError


def _images(batch, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=g), torch.rand(batch, 3, height, width, generator=g)


def _blob_mask(batch, height, width):
    ys = torch.arange(height).view(-1, 1).float()
    xs = torch.arange(width).view(1, -1).float()
    masks = []
    for i in range(batch):
        cy, cx, r = height * (0.4 + 0.1 * i), width * 0.5, min(height, width) * 0.3
        masks.append((((ys - cy) ** 2 + (xs - cx) ** 2) < r * r).float())
    return torch.stack(masks)


def _interior(mask):
    """Mask pixels whose 4 neighbours are all in the mask (and inside the image)."""
    m = mask[:, None]
    p = F.pad(m, (1, 1, 1, 1))
    return (m * p[..., :-2, 1:-1] * p[..., 2:, 1:-1] * p[..., 1:-1, :-2] * p[..., 1:-1, 2:])[:, 0] > 0.5


@pytest.mark.parametrize("height,width", [(24, 24), (25, 31)])
def test_background_is_kept_outside_and_foreground_gradients_inside(height, width):
    fg, bg = _images(2, height, width)
    mask = _blob_mask(2, height, width)
    out = poisson_blend(fg, bg, mask, tolerance=1e-6)
    outside = (mask < 0.5)[:, None].expand_as(bg)
    assert torch.equal(out[outside], bg[outside])
    residual = guidance_laplacian(out) - guidance_laplacian(fg)
    interior = _interior(mask)[:, None].expand_as(bg)
    assert residual[interior].abs().max() < 1e-3
    # and it is not simply the paste: the seam was moved into the interior
    assert (out - torch.where(mask[:, None] > 0.5, fg, bg)).abs().max() > 0.05


def test_equals_plain_pasting_when_the_foreground_already_matches_the_boundary():
    fg, other = _images(1, 20, 22, seed=3)
    mask = torch.zeros(1, 20, 22)
    mask[:, 5:14, 6:17] = 1
    ring = F.max_pool2d(mask[:, None], 3, 1, 1)[:, 0] > 0.5  # mask plus its outer boundary
    bg = torch.where(ring[:, None], fg, other)  # the background agrees with fg on the boundary, differs elsewhere
    out = poisson_blend(fg, bg, mask, tolerance=1e-7)
    pasted = torch.where(mask[:, None] > 0.5, fg, bg)
    assert torch.allclose(out, pasted, atol=1e-4)


def test_a_constant_offset_foreground_blends_to_the_background():
    _, bg = _images(1, 16, 16)
    mask = torch.zeros(1, 16, 16)
    mask[:, 4:12, 4:12] = 1
    out = poisson_blend(bg + 0.3, bg, mask, tolerance=1e-7)  # same gradients, shifted colour
    assert torch.allclose(out, bg, atol=1e-4)


def test_mask_touching_the_image_border_uses_the_remaining_boundary():
    fg, bg = _images(1, 16, 16)
    mask = paste_mask(16, 16, 0.5, "top-left")[:, 0]
    layer = foreground_layer(fg, 16, 16, 0.5, "top-left")
    out = poisson_blend(layer, bg, mask, tolerance=1e-7)
    assert torch.isfinite(out).all()
    residual = guidance_laplacian(out) - guidance_laplacian(layer)
    inside = (mask > 0.5)[:, None].expand_as(out).clone()
    inside[..., 7, :] = False  # the row and column next to the background see the seam term
    inside[..., :, 7] = False
    assert residual[inside].abs().max() < 1e-3


def test_batches_are_independent_and_broadcast():
    fg, bg = _images(3, 16, 18)
    mask = _blob_mask(3, 16, 18)
    together = poisson_blend(fg, bg, mask, tolerance=1e-6)
    alone = torch.cat([poisson_blend(fg[i:i + 1], bg[i:i + 1], mask[i:i + 1], tolerance=1e-6) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)
    shared = poisson_blend(fg[:1], bg, mask[:1], tolerance=1e-6)
    assert shared.shape == (3, 3, 16, 18)


def test_empty_mask_is_an_error():
    fg, bg = _images(1, 8, 8)
    with pytest.raises(FuseDreamError, match="mask is empty"):
        poisson_blend(fg, bg, torch.zeros(1, 8, 8))


def test_full_mask_is_an_error():
    fg, bg = _images(1, 8, 8)
    with pytest.raises(FuseDreamError, match="whole image"):
        poisson_blend(fg, bg, torch.ones(1, 8, 8))


def test_size_mismatches_are_errors():
    fg, bg = _images(1, 8, 8)
    with pytest.raises(FuseDreamError, match="same channels and size"):
        poisson_blend(fg, torch.rand(1, 3, 9, 8), torch.ones(1, 8, 8))
    with pytest.raises(FuseDreamError, match="mask size"):
        poisson_blend(fg, bg, torch.ones(1, 9, 8))


@pytest.mark.parametrize("position", ["center", "top-left", "bottom-center"])
def test_a_rectangular_mask_is_solved_exactly_in_one_iteration_by_the_box_preconditioner(position):
    fg, bg = _images(2, 40, 36, seed=5)
    mask = paste_mask(40, 36, 0.65, position)[:, 0]
    layer = foreground_layer(fg, 40, 36, 0.65, position)
    once = poisson_blend(layer, bg, mask, max_iterations=1, tolerance=1e-12)
    converged = poisson_blend(layer, bg, mask, max_iterations=2000, tolerance=1e-7)
    assert torch.allclose(once, converged, atol=1e-4)
    assert not torch.allclose(once, torch.where(mask[:, None] > 0.5, layer, bg), atol=1e-2)
