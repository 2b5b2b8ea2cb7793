"""Dynamic thresholding (Imagen, Saharia et al. 2022), as CLIPAG's generator-free synthesis applies it to pixels.

With x in [0, 1] mapped to u = 2x − 1 and s = max(quantile_p(|u|), 1) per image,
x ← (clamp(u, −s, s) / s + 1) / 2. Pixels that overshoot are pulled back by shrinking the whole image towards
grey instead of being clipped one by one, so saturated regions keep their detail; with ``quantile=None`` it is a
plain clamp to [0, 1].
"""
from __future__ import annotations

import torch

from ..core.errors import require


def image_quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Per-image ``q`` quantile ``[B]`` with linear interpolation (``torch.quantile``'s definition, no size cap)."""
    values = x.flatten(1).float().sort(dim=1).values
    position = q * (values.shape[1] - 1)
    low, frac = int(position), position - int(position)
    high = min(low + 1, values.shape[1] - 1)
    return values[:, low] + frac * (values[:, high] - values[:, low])


def dynamic_threshold(x: torch.Tensor, quantile: float | None = 0.95) -> torch.Tensor:
    """Images ``[B,3,H,W]`` (any range) → images in [0, 1], each thresholded at its own ``quantile`` of |2x − 1|."""
    if quantile is None:
        return x.clamp(0, 1)
    require(0.0 < quantile <= 1.0, f"threshold quantile must be in (0, 1], got {quantile}.")
    u = x * 2 - 1
    s = image_quantile(u.detach().abs(), quantile).clamp(min=1.0).to(u.dtype).view(-1, *([1] * (u.ndim - 1)))
    return (torch.maximum(torch.minimum(u, s), -s) / s + 1) / 2
