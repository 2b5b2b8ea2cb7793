"""Fuse/crop geometry: every (α, t) cell of the paper's grid at odd and even sizes."""
import pytest
import torch

from fusedream_pack.fusedream_ops.composition.geometry import (PAPER_SCALES, POSITIONS, crop, foreground_layer, fuse,
                                                               paste_box, paste_mask, resize)
from fusedream_pack.fusedream_ops.core.errors import FuseDreamError

CELLS = [(s, p) for s in PAPER_SCALES for p in POSITIONS]


def test_the_grid_has_the_papers_18_cells_with_9_distinct_positions():
    assert len(CELLS) == 18
    assert len(set(POSITIONS)) == 9


@pytest.mark.parametrize("height,width", [(32, 32), (33, 33), (31, 48), (257, 256)])
@pytest.mark.parametrize("scale,position", CELLS)
def test_box_is_the_scaled_size_at_the_named_side(height, width, scale, position):
    box = paste_box(height, width, scale, position)
    assert (box.height, box.width) == (int(scale * height + 0.5), int(scale * width + 0.5))
    vertical, _, horizontal = position.partition("-") if position != "center" else ("center", "", "center")
    horizontal = horizontal or "center"
    expected_top = {"top": 0, "center": (height - box.height) // 2, "bottom": height - box.height}[vertical]
    expected_left = {"left": 0, "center": (width - box.width) // 2, "right": width - box.width}[horizontal]
    assert (box.top, box.left) == (expected_top, expected_left)
    assert box.top + box.height <= height and box.left + box.width <= width


@pytest.mark.parametrize("height,width", [(32, 32), (33, 35)])
@pytest.mark.parametrize("scale,position", CELLS)
def test_fused_image_is_the_resized_foreground_exactly_inside_the_crop_box(height, width, scale, position):
    g = torch.Generator().manual_seed(0)
    fg = torch.rand(2, 3, 20, 22, generator=g)
    bg = torch.rand(2, 3, height, width, generator=g)
    fused = fuse(fg, bg, scale, position)
    box = paste_box(height, width, scale, position)
    rows, cols = box.slices()
    inside = torch.zeros(height, width, dtype=torch.bool)
    inside[rows, cols] = True
    assert torch.equal(fused[..., rows, cols], resize(fg, (box.height, box.width)))
    assert torch.equal(fused[..., ~inside], bg[..., ~inside])
    assert torch.equal(crop(bg, scale, position), bg[..., rows, cols])
    # the crop is exactly what the foreground covers: pasting the crop itself back changes nothing
    assert torch.equal(fuse(crop(bg, scale, position), bg, scale, position), bg)
    assert torch.equal(paste_mask(height, width, scale, position)[0, 0], inside.float())


def test_foreground_layer_extends_the_box_edges_outwards():
    fg = torch.rand(1, 3, 16, 16)
    layer = foreground_layer(fg, 32, 32, 0.5, "top-left")
    assert torch.equal(layer[..., :16, :16], fg)
    assert torch.equal(layer[..., :16, 20], fg[..., :, 15])
    assert torch.equal(layer[..., 30, :16], fg[..., 15, :])


def test_fuse_is_differentiable_in_both_images_and_broadcasts_a_batch_of_one():
    fg = torch.rand(1, 3, 16, 16, requires_grad=True)
    bg = torch.rand(3, 3, 24, 24, requires_grad=True)
    out = fuse(fg, bg, 0.65, "bottom-right")
    assert out.shape == (3, 3, 24, 24)
    out.sum().backward()
    assert fg.grad.abs().sum() > 0
    box = paste_box(24, 24, 0.65, "bottom-right")
    rows, cols = box.slices()
    assert torch.all(bg.grad[..., rows, cols] == 0) and bg.grad.sum() == 3 * 3 * (24 * 24 - box.height * box.width)


@pytest.mark.parametrize("scale", [0.0, 1.0, -0.2, 1.5])
def test_scale_outside_the_open_unit_interval_is_an_error(scale):
    with pytest.raises(FuseDreamError, match="scale must be strictly between 0 and 1"):
        fuse(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), scale, "center")


def test_unknown_position_is_an_error_listing_the_valid_ones():
    with pytest.raises(FuseDreamError, match="top-left, top-center"):
        crop(torch.rand(1, 3, 8, 8), 0.5, "middle")


def test_mismatched_batches_are_an_error():
    with pytest.raises(FuseDreamError, match="batch"):
        fuse(torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8), 0.5, "center")


def test_resize_antialiases_when_only_the_height_shrinks():
    """Shrinking one side is shrinking: a height-only shrink (64×32 → 32×32) must be antialiased, not aliased."""
    import torch.nn.functional as F

    from fusedream_pack.fusedream_ops.composition.geometry import resize

    images = torch.rand(2, 3, 64, 32, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    aliased = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False, antialias=False)
    assert torch.allclose(resize(images, (32, 32)), expected, atol=1e-6)
    assert not torch.allclose(expected, aliased, atol=1e-3)
