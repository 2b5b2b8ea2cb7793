"""DiffAugment (Zhao et al. 2020) as used by FuseDream's AugCLIP: batched, differentiable, per-image random draws.

The official code augments in the [-1, 1] pixel range, so brightness ±0.5 is a quarter of the [0, 1] range and
translated/shrunk/cut-out areas become mid-grey. :class:`AugmentPolicy` keeps that convention by default
(``signed_range=True``); CLIPAG's notebook applies the same ops directly to [0, 1] images (``signed_range=False``).
Every image gets its own draws (the official code draws one resize ratio per batch). Translation and resize are one
``grid_sample`` for the whole batch; random numbers come from a CPU ``torch.Generator`` so a seed reproduces the
same augmentations on every device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentPolicy:
    color: bool = True
    translation: bool = True
    resize: bool = True
    cutout: bool = True
    brightness: float = 0.5
    """Brightness shift drawn from U(-b, b)."""
    translation_ratio: float = 0.125
    """Integer shift of up to ``ratio·size`` pixels in x and y."""
    resize_range: tuple[float, float] = (0.8, 1.2)
    """Zoom factor: below 1 shrinks onto a padded canvas, above 1 crops the centre."""
    cutout_ratio: float = 0.5
    """Side of the erased square relative to the image side."""
    signed_range: bool = True
    """Apply the ops in [-1, 1] pixel units like the official FuseDream code."""

    @property
    def active(self) -> bool:
        return self.color or self.translation or self.resize or self.cutout


def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * (high - low) + low).to(device)


def _color(x: torch.Tensor, policy: AugmentPolicy, generator) -> torch.Tensor:
    n = x.shape[0]
    shift = _uniform(n, -policy.brightness, policy.brightness, generator, x.device).view(n, 1, 1, 1)
    saturation = _uniform(n, 0.0, 2.0, generator, x.device).view(n, 1, 1, 1)
    contrast = _uniform(n, 0.5, 1.5, generator, x.device).view(n, 1, 1, 1)
    x = x + shift
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * saturation + grey
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean


def _translate_and_resize(x: torch.Tensor, policy: AugmentPolicy, generator) -> torch.Tensor:
    """out(p) = x(p / s − t): a centred zoom by s after an integer shift t, zero padding outside."""
    n, _, h, w = x.shape
    scale = torch.ones(n)
    if policy.resize:
        scale = torch.rand(n, generator=generator) * (policy.resize_range[1] - policy.resize_range[0]) \
            + policy.resize_range[0]
    shift = torch.zeros(n, 2)
    if policy.translation:
        sx, sy = int(w * policy.translation_ratio + 0.5), int(h * policy.translation_ratio + 0.5)
        shift[:, 0] = torch.randint(-sx, sx + 1, (n,), generator=generator) * 2.0 / w
        shift[:, 1] = torch.randint(-sy, sy + 1, (n,), generator=generator) * 2.0 / h
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1.0 / scale
    theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = -shift
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _cutout(x: torch.Tensor, policy: AugmentPolicy, generator) -> torch.Tensor:
    n, _, h, w = x.shape
    side_y, side_x = int(h * policy.cutout_ratio + 0.5), int(w * policy.cutout_ratio + 0.5)
    cy = torch.randint(0, h, (n, 1, 1), generator=generator).to(x.device)
    cx = torch.randint(0, w, (n, 1, 1), generator=generator).to(x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    oy, ox = ys - cy + side_y // 2, xs - cx + side_x // 2
    inside = (oy >= 0) & (oy < side_y) & (ox >= 0) & (ox < side_x)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def diff_augment(x: torch.Tensor, policy: AugmentPolicy, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment images ``[N,3,H,W]`` in 0..1 (colour → translation → resize → cutout); differentiable in ``x``."""
    if not policy.active:
        return x
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,)).item()))
    if policy.signed_range:
        x = x * 2 - 1
    if policy.color:
        x = _color(x, policy, generator)
    if policy.translation or policy.resize:
        x = _translate_and_resize(x, policy, generator)
    if policy.cutout:
        x = _cutout(x, policy, generator)
    return (x + 1) / 2 if policy.signed_range else x
