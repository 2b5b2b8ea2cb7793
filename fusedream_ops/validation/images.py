"""ComfyUI IMAGE ``[B,H,W,C]`` and MASK ``[B,H,W]`` inputs: not empty, large enough, finite, sizes that match."""
from __future__ import annotations

import torch

from ..core.errors import FuseDreamError, require

LPIPS_MIN_SIZE = {"alex": 31, "vgg": 16}
"""Smallest side LPIPS accepts per backbone: below it the trunk's pooling runs out of pixels (measured: AlexNet's
stride-4 first layer and three 3×3 poolings need 31 px, VGG's four poolings 16 px)."""


def require_image(image, name: str = "image", min_size: int = 1) -> None:
    """An IMAGE tensor ``[B,H,W,C]`` with B ≥ 1, sides ≥ ``min_size``, 1/3/4 channels and finite pixels."""
    require(isinstance(image, torch.Tensor),
            f"{name} must be an IMAGE tensor [batch, height, width, channels], got {type(image).__name__}.")
    require(image.ndim == 4, f"{name} must be an IMAGE batch [batch, height, width, channels], got shape "
                             f"{tuple(image.shape)}.")
    b, h, w, c = image.shape
    require(b >= 1, f"{name} is an empty batch (0 images): connect at least one image.")
    require(c in (1, 3, 4), f"{name} must have 1, 3 or 4 channels, got {c} (shape {tuple(image.shape)}).")
    require(h >= min_size and w >= min_size,
            f"{name} is {w}×{h} pixels; it must be at least {min_size}×{min_size}.")
    require(image.is_floating_point(), f"{name} must hold float pixels in 0..1, got {image.dtype}.")
    if not bool(torch.isfinite(image).all()):
        raise FuseDreamError(f"{name} holds NaN or infinite pixels: check the node that made it.")


def require_mask(mask, name: str = "mask") -> None:
    """A MASK tensor ``[H,W]`` or ``[B,H,W]`` with at least one pixel and finite values."""
    require(isinstance(mask, torch.Tensor), f"{name} must be a MASK tensor [batch, height, width], got "
                                            f"{type(mask).__name__}.")
    require(mask.ndim in (2, 3), f"{name} must be a MASK [batch, height, width], got shape {tuple(mask.shape)}.")
    require(mask.numel() > 0, f"{name} is empty (shape {tuple(mask.shape)}): connect a mask with at least one pixel.")
    require(mask.is_floating_point() or mask.dtype == torch.bool, f"{name} must hold values in 0..1, got {mask.dtype}.")
    if mask.is_floating_point() and not bool(torch.isfinite(mask).all()):
        raise FuseDreamError(f"{name} holds NaN or infinite values.")


def require_same_size(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> None:
    """Two IMAGE/MASK tensors of the same height and width (``[..., H, W, C]`` images, ``[..., H, W]`` masks)."""
    size_a = tuple(a.shape[1:3]) if a.ndim == 4 else tuple(a.shape[-2:])
    size_b = tuple(b.shape[1:3]) if b.ndim == 4 else tuple(b.shape[-2:])
    require(size_a == size_b, f"{a_name} is {size_a[1]}×{size_a[0]} but {b_name} is {size_b[1]}×{size_b[0]}: "
                              f"they must have the same size.")


def require_batches_match(a: int, a_name: str, b: int, b_name: str) -> None:
    require(a == b or a == 1 or b == 1, f"{a_name} holds {a} images and {b_name} {b}: they must be equal or one of "
                                        f"them 1.")
