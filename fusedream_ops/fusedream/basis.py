"""The over-parameterised latent of FuseDream eq. 4: ξ = Σ_i w_i ξ_i with basis vectors and weights both learned."""
from __future__ import annotations

import torch
from torch import nn

from ..core.errors import require
from .latents import Z_LIMIT, BigGANLatent

BASIS_MODES = ("paper", "official")


class LatentBasis(nn.Module):
    """``forward()`` → the combined latent ``(z [1,d], y [1,d])``.

    ``paper``: one scalar weight per basis vector, initialised to 1/k (eq. 4).
    ``official``: the released code's per-element weights, softmax-normalised over the basis, initialised N(0, 1).
    With ``optimize_y=False`` the class embeddings stay fixed and only their weights move.
    Only the basis z are kept in [-2, 2] (:meth:`clamp_`); the combined z is not clamped, as in the paper and the
    official code (clamping it would zero the gradient of every coordinate that leaves the box).
    """

    def __init__(self, latents: BigGANLatent, mode: str = "paper", optimize_y: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__()
        require(mode in BASIS_MODES, f"mode must be one of {', '.join(BASIS_MODES)}, got '{mode}'.")
        require(len(latents) >= 1, "the basis needs at least one latent.")
        self.mode = mode
        self.truncation = latents.truncation
        z, y = latents.z.detach().clone().float(), latents.y.detach().clone().float()
        self.z = nn.Parameter(z)
        self.y = nn.Parameter(y, requires_grad=optimize_y)
        k, d = z.shape
        if mode == "paper":
            self.w_z = nn.Parameter(torch.full((k, 1), 1.0 / k, device=z.device))
            self.w_y = nn.Parameter(torch.full((k, 1), 1.0 / k, device=z.device))
        else:
            self.w_z = nn.Parameter(torch.randn(k, d, generator=generator).to(z.device))
            self.w_y = nn.Parameter(torch.randn(k, y.shape[1], generator=generator).to(z.device))

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "paper":
            return self.w_z, self.w_y
        return self.w_z.softmax(dim=0), self.w_y.softmax(dim=0)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        w_z, w_y = self.weights()
        z = (w_z * self.z).sum(dim=0, keepdim=True)
        y = (w_y * self.y).sum(dim=0, keepdim=True)
        return z, y

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep the basis z inside [-2, 2] after each optimizer step (FuseDream's truncation)."""
        self.z.clamp_(-Z_LIMIT, Z_LIMIT)

    def latent(self) -> BigGANLatent:
        z, y = self()
        return BigGANLatent(z.detach().cpu(), y.detach().cpu(), self.truncation)
