"""Conversions between the ops' image layout ``[B,3,H,W]`` in 0..1 and ComfyUI's IMAGE ``[B,H,W,3]`` / PIL."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .errors import require


def to_image_batch(x: torch.Tensor) -> torch.Tensor:
    """``[B,3,H,W]`` → ComfyUI IMAGE ``[B,H,W,3]`` float32 on the CPU, clamped to 0..1."""
    return x.detach().float().clamp(0, 1).movedim(1, -1).cpu().contiguous()


def from_image_batch(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    """ComfyUI IMAGE ``[B,H,W,C]`` → ``[B,3,H,W]`` (alpha dropped, grey expanded)."""
    require(image.ndim == 4, f"{name} must be an IMAGE batch [B,H,W,C], got shape {tuple(image.shape)}.")
    x = image.movedim(-1, 1).float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    require(x.shape[1] in (3, 4), f"{name} must have 1, 3 or 4 channels, got {x.shape[1]}.")
    return x[:, :3]


def to_pil(x: torch.Tensor) -> Image.Image:
    """The first image of ``[B,3,H,W]`` (or ``[3,H,W]``) in 0..1 as an RGB PIL image."""
    if x.ndim == 4:
        x = x[0]
    arr = (x.detach().float().clamp(0, 1).movedim(0, -1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(arr)


def from_pil(img: Image.Image, size: int | None = None) -> torch.Tensor:
    """An RGB PIL image as ``[1,3,H,W]`` in 0..1, optionally resized to ``size``×``size``."""
    img = img.convert("RGB")
    if size is not None:
        img = img.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).movedim(-1, 0)[None]
