"""FuseDream-Composition's geometry (Sec. 3.3): I_Fuse = Fuse(I_fg, I_bg, {α, t}) and Crop(I_bg, {α, t}).

The foreground is resized by α ∈ (0, 1) and pasted onto the background at one of 9 positions
t ∈ {top, center, bottom} × {left, center, right}. The pasted box has ``round(α·H) × round(α·W)`` pixels of the
background's size ``H × W``; "center" offsets are ``floor((H − h) / 2)``. Everything is differentiable in both images
and batched (a batch of 1 broadcasts against the other image's batch).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.errors import require

POSITIONS = ("top-left", "top-center", "top-right",
             "center-left", "center", "center-right",
             "bottom-left", "bottom-center", "bottom-right")
PAPER_SCALES = (0.65, 0.5)
"""The paper's grid of scales α; with the 9 positions it makes 18 cells."""


@dataclass(frozen=True)
class Box:
    """Where the foreground lands: rows ``top:top+height``, columns ``left:left+width``."""

    top: int
    left: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def require_scale(scale: float) -> None:
    require(0.0 < float(scale) < 1.0, f"scale must be strictly between 0 and 1 (the paper uses 0.65 and 0.5), "
                                      f"got {scale}.")


def require_position(position: str) -> None:
    require(position in POSITIONS, f"position must be one of {', '.join(POSITIONS)}, got '{position}'.")


def paste_box(height: int, width: int, scale: float, position: str) -> Box:
    """The box of a ``height × width`` background that a foreground scaled by ``scale`` covers at ``position``."""
    require_scale(scale)
    require_position(position)
    h = min(height, max(1, int(scale * height + 0.5)))
    w = min(width, max(1, int(scale * width + 0.5)))
    row, col = divmod(POSITIONS.index(position), 3)
    top = (0, (height - h) // 2, height - h)[row]
    left = (0, (width - w) // 2, width - w)[col]
    return Box(top, left, h, w)


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[B,C,H,W]`` (antialiased when shrinking), differentiable; identity at the same size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _batch_pair(foreground: torch.Tensor, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    require(foreground.ndim == 4 and background.ndim == 4,
            f"foreground and background must be image batches [B,C,H,W], got {tuple(foreground.shape)} and "
            f"{tuple(background.shape)}.")
    require(foreground.shape[1] == background.shape[1],
            f"foreground and background must have the same channels, got {foreground.shape[1]} and "
            f"{background.shape[1]}.")
    bf, bb = foreground.shape[0], background.shape[0]
    require(bf == bb or bf == 1 or bb == 1,
            f"foreground batch ({bf}) and background batch ({bb}) must be equal or one of them 1.")
    n = max(bf, bb)
    return foreground.expand(n, -1, -1, -1), background.expand(n, -1, -1, -1)


def crop(background: torch.Tensor, scale: float, position: str) -> torch.Tensor:
    """Crop(I_bg, {α, t}): the background pixels a foreground pasted at (α, t) would cover."""
    box = paste_box(background.shape[-2], background.shape[-1], scale, position)
    rows, cols = box.slices()
    return background[..., rows, cols]


def paste_mask(height: int, width: int, scale: float, position: str, device=None) -> torch.Tensor:
    """``[1,1,H,W]`` with 1 inside the pasted box and 0 elsewhere."""
    box = paste_box(height, width, scale, position)
    mask = torch.zeros(1, 1, height, width, device=device)
    rows, cols = box.slices()
    mask[..., rows, cols] = 1.0
    return mask


def foreground_layer(foreground: torch.Tensor, height: int, width: int, scale: float, position: str) -> torch.Tensor:
    """The foreground resized into its box on a ``height × width`` canvas, its edge pixels extended outwards.

    Inside the box this is exactly what :func:`fuse` pastes; outside, the replicated edge gives a zero gradient
    across the box border, which is the guidance Poisson blending needs at the seam.
    """
    box = paste_box(height, width, scale, position)
    small = resize(foreground, (box.height, box.width))
    pad = (box.left, width - box.left - box.width, box.top, height - box.top - box.height)
    return F.pad(small, pad, mode="replicate") if any(pad) else small


def fuse(foreground: torch.Tensor, background: torch.Tensor, scale: float, position: str) -> torch.Tensor:
    """Fuse(I_fg, I_bg, {α, t}): the background with the foreground, resized by α, pasted at position t."""
    foreground, background = _batch_pair(foreground, background)
    height, width = background.shape[-2:]
    layer = foreground_layer(foreground, height, width, scale, position)
    mask = paste_mask(height, width, scale, position, background.device).bool()
    return torch.where(mask, layer, background)
