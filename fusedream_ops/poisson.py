"""Poisson blending (Pérez, Gangnet & Blake 2003, "seamless cloning"), batched in torch on the images' device.

Inside the mask Ω the result f solves the discrete Poisson equation with the foreground g as guidance and the
background as Dirichlet boundary (Pérez eq. 7): for every p ∈ Ω, over its 4-neighbours q inside the image,

    |N_p| f_p − Σ_{q ∈ N_p ∩ Ω} f_q = Σ_{q ∈ N_p \\ Ω} bg_q + Σ_{q ∈ N_p} (g_p − g_q),

and f = bg outside Ω. At the image border there is no neighbour (a Neumann condition), so a mask touching the border
is fine. The system is symmetric positive definite whenever Ω leaves at least one background pixel; it is solved by
conjugate gradients, one independent system per image and channel, warm-started at the plain paste.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import require

CHECK_EVERY = 10
"""Convergence is checked (one device sync) every this many CG iterations."""


def neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """Σ over the 4-neighbours inside the image of every pixel of ``[B,C,H,W]`` (zero beyond the border)."""
    p = F.pad(x, (1, 1, 1, 1))
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]


def neighbour_count(height: int, width: int, device, dtype) -> torch.Tensor:
    """|N_p|: 4 inside, 3 on edges, 2 in corners, as ``[1,1,H,W]``."""
    return neighbour_sum(torch.ones(1, 1, height, width, device=device, dtype=dtype))


def guidance_laplacian(image: torch.Tensor) -> torch.Tensor:
    """Σ_{q ∈ N_p} (g_p − g_q): the negative discrete Laplacian of ``image`` with the image-border convention."""
    count = neighbour_count(image.shape[-2], image.shape[-1], image.device, image.dtype)
    return count * image - neighbour_sum(image)


def _prepare_mask(mask: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    require(mask.ndim in (2, 3, 4), f"mask must be [H,W], [B,H,W] or [B,1,H,W], got shape {tuple(mask.shape)}.")
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim == 3:
        mask = mask[:, None]
    require(tuple(mask.shape[-2:]) == (height, width),
            f"mask size {tuple(mask.shape[-2:])} must equal the image size {(height, width)}.")
    require(mask.shape[0] in (1, batch), f"mask batch ({mask.shape[0]}) must be 1 or the image batch ({batch}).")
    inside = (mask[:, :1] > 0.5).to(torch.float32).expand(batch, 1, height, width)
    counts = inside.sum(dim=(1, 2, 3))
    empty = (counts == 0).nonzero().flatten().tolist()
    require(not empty, f"mask is empty (no value above 0.5) for image(s) {empty}: paint the region to blend.")
    full = (counts == height * width).nonzero().flatten().tolist()
    require(not full, f"mask covers the whole image for image(s) {full}: leave some background as the boundary.")
    return inside


def poisson_blend(foreground: torch.Tensor, background: torch.Tensor, mask: torch.Tensor,
                  max_iterations: int = 5000, tolerance: float = 1e-5) -> torch.Tensor:
    """Seamlessly clone ``foreground`` into ``background`` where ``mask`` > 0.5; all ``[B,C,H,W]``, same size.

    The foreground is aligned with the background (place it first, e.g. with
    :func:`~fusedream_ops.compose.foreground_layer`). CG stops when every system's residual is below
    ``tolerance`` × its right-hand side, or after ``max_iterations``. The result is not clamped.
    """
    require(foreground.ndim == 4 and background.ndim == 4,
            f"foreground and background must be image batches [B,C,H,W], got {tuple(foreground.shape)} and "
            f"{tuple(background.shape)}.")
    require(foreground.shape[1:] == background.shape[1:],
            f"foreground {tuple(foreground.shape[1:])} and background {tuple(background.shape[1:])} must have the "
            f"same channels and size.")
    bf, bb = foreground.shape[0], background.shape[0]
    require(bf == bb or bf == 1 or bb == 1, f"foreground batch ({bf}) and background batch ({bb}) must be equal "
                                            f"or one of them 1.")
    require(max_iterations >= 1, f"max_iterations must be at least 1, got {max_iterations}.")
    require(tolerance > 0, f"tolerance must be positive, got {tolerance}.")
    batch, channels, height, width = max(bf, bb), *background.shape[1:]
    g = foreground.expand(batch, -1, -1, -1).to(torch.float32)
    bg = background.to(g.device).expand(batch, -1, -1, -1).to(torch.float32)
    inside = _prepare_mask(mask.to(g.device), batch, height, width)
    outside = 1.0 - inside
    count = neighbour_count(height, width, g.device, g.dtype)

    def apply(x):
        return inside * (count * x - neighbour_sum(inside * x))

    b = inside * (neighbour_sum(outside * bg) + guidance_laplacian(g))
    x = inside * g
    r = b - apply(x)
    p = r.clone()
    rr = (r * r).sum(dim=(2, 3), keepdim=True)
    stop = (tolerance ** 2) * (b * b).sum(dim=(2, 3), keepdim=True).clamp_min(1e-30)
    for i in range(max_iterations):
        if i % CHECK_EVERY == 0 and bool((rr <= stop).all()):
            break
        ap = apply(p)
        pap = (p * ap).sum(dim=(2, 3), keepdim=True)
        alpha = torch.where(pap > 0, rr / pap.clamp_min(1e-30), torch.zeros_like(rr))
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = (r * r).sum(dim=(2, 3), keepdim=True)
        p = r + torch.where(rr > 0, rr_new / rr.clamp_min(1e-30), torch.zeros_like(rr)) * p
        rr = rr_new
    return (inside * x + outside * bg).to(background.dtype)
