"""Poisson blending (Pérez, Gangnet & Blake 2003, "seamless cloning"), batched in torch on the images' device.

Inside the mask Ω the result f solves the discrete Poisson equation with the foreground g as guidance and the
background as Dirichlet boundary (Pérez eq. 7): for every p ∈ Ω, over its 4-neighbours q inside the image,

    |N_p| f_p − Σ_{q ∈ N_p ∩ Ω} f_q = Σ_{q ∈ N_p \\ Ω} bg_q + Σ_{q ∈ N_p} (g_p − g_q),

and f = bg outside Ω. At the image border there is no neighbour (a Neumann condition), so a mask touching the border
is fine. The system is symmetric positive definite whenever Ω leaves at least one background pixel; it is solved by
preconditioned conjugate gradients, one independent system per image and channel, warm-started at the plain paste.
The preconditioner is the exact inverse of the same operator on the mask's bounding box, which is separable
(A_box = T_y ⊕ T_x, 1-D second differences with Dirichlet sides inside the image and Neumann sides at its border) and
applied with two eigenbases: for a rectangular mask — FuseDream's paste box — CG converges in one iteration.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.errors import require
from ..core.progress import StepCallback, report
from ..validation.numbers import require_number

CHECK_EVERY = 10
"""Convergence is checked (one device sync) at each of the first and then every this many CG iterations."""


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
                  max_iterations: int = 5000, tolerance: float = 1e-5,
                  on_step: StepCallback | None = None) -> torch.Tensor:
    """Seamlessly clone ``foreground`` into ``background`` where ``mask`` > 0.5; all ``[B,C,H,W]``, same size.

    The foreground is aligned with the background (place it first, e.g. with
    :func:`~fusedream_ops.composition.geometry.foreground_layer`). CG stops when every system's residual is below
    ``tolerance`` × its right-hand side, or after ``max_iterations``. The result is not clamped. ``on_step`` is
    called after every iteration (``total`` = ``max_iterations``; raising from it cancels the solve).
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
    require_number("max_iterations", max_iterations, 1, integer=True)
    require_number("tolerance", tolerance, 0, low_open=True)
    for name, tensor in (("foreground", foreground), ("background", background), ("mask", mask)):
        require(tensor.numel() > 0, f"{name} is empty (shape {tuple(tensor.shape)}).")
        require(bool(torch.isfinite(tensor).all()), f"{name} holds NaN or infinite values.")
    batch, (height, width) = max(bf, bb), background.shape[-2:]
    g = foreground.expand(batch, -1, -1, -1).to(torch.float32)
    bg = background.to(g.device).expand(batch, -1, -1, -1).to(torch.float32)
    inside = _prepare_mask(mask.to(g.device), batch, height, width)
    outside = 1.0 - inside
    count = neighbour_count(height, width, g.device, g.dtype)

    def apply(x):
        return inside * (count * x - neighbour_sum(inside * x))

    precondition = BoxPreconditioner(inside)

    def dot(a, b):
        return (a * b).sum(dim=(2, 3), keepdim=True)

    b = inside * (neighbour_sum(outside * bg) + guidance_laplacian(g))
    x = inside * g
    r = b - apply(x)
    z = precondition(r)
    p = z
    rz = dot(r, z)
    stop = (tolerance ** 2) * dot(b, b).clamp_min(1e-30)
    for i in range(max_iterations):
        if (i < CHECK_EVERY or i % CHECK_EVERY == 0) and bool((dot(r, r) <= stop).all()):
            break
        ap = apply(p)
        pap = dot(p, ap)
        alpha = torch.where(pap > 0, rz / pap.clamp_min(1e-30), torch.zeros_like(rz))
        x = x + alpha * p
        r = r - alpha * ap
        z = precondition(r)
        rz_new = dot(r, z)
        p = z + torch.where(rz > 0, rz_new / rz.clamp_min(1e-30), torch.zeros_like(rz)) * p
        rz = rz_new
        report(on_step, i + 1, max_iterations)
    return (inside * x + outside * bg).to(background.dtype)


def second_difference(start: int, stop: int, size: int) -> torch.Tensor:
    """1-D operator of the pixels ``start:stop`` of an axis of length ``size``: 2 on the diagonal (1 at an end that
    is the image border: no neighbour there), −1 between neighbours."""
    n = stop - start
    t = torch.diag(torch.full((n,), 2.0, dtype=torch.float64))
    if n > 1:
        ones = torch.ones(n - 1, dtype=torch.float64)
        t -= torch.diag(ones, 1) + torch.diag(ones, -1)
    if start == 0:
        t[0, 0] -= 1
    if stop == size:
        t[-1, -1] -= 1
    return t


class BoxPreconditioner:
    """z = P_Ω A_box⁻¹ P_Ω r per image, A_box = T_y ⊕ T_x on the bounding box of the image's mask (SPD)."""

    def __init__(self, inside: torch.Tensor):
        self.inside = inside
        height, width = inside.shape[-2:]
        self.boxes = []
        solved = {}
        for m in inside[:, 0]:
            rows, cols = m.any(dim=1).nonzero().flatten(), m.any(dim=0).nonzero().flatten()
            box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
            if box not in solved:
                r0, r1, c0, c1 = box
                ly, qy = torch.linalg.eigh(second_difference(r0, r1, height))
                lx, qx = torch.linalg.eigh(second_difference(c0, c1, width))
                denominator = ly[:, None] + lx[None, :]
                denominator[denominator < 1e-9] = 1.0  # the constant mode when the box spans the whole image
                to = dict(device=inside.device, dtype=inside.dtype)
                solved[box] = ((slice(r0, r1), slice(c0, c1)), qy.to(**to), qx.to(**to), denominator.to(**to))
            self.boxes.append(solved[box])

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        r = self.inside * r
        z = torch.zeros_like(r)
        for i, ((rows, cols), qy, qx, denominator) in enumerate(self.boxes):
            spectral = qy.t() @ r[i, :, rows, cols] @ qx / denominator
            z[i, :, rows, cols] = qy @ spectral @ qx.t()
        return self.inside * z
