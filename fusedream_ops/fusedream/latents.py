"""BigGAN latents ξ = (z, y) and FuseDream's random candidates."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from ..core.autograd import no_grad_normal_tensors
from ..core.errors import require, require_positive

Z_LIMIT = 2.0
"""FuseDream truncates z by clamping to [-2, 2] (the official code and eq. 2's remark)."""

Z_MODES = ("clamp", "truncated_normal")


@dataclass
class BigGANLatent:
    """A batch of latents: noise ``z [N, z_dim]``, continuous class embedding ``y [N, z_dim]``."""

    z: torch.Tensor
    y: torch.Tensor
    truncation: float = 1.0
    labels: Optional[torch.Tensor] = None
    """The class index each ``y`` started from (None once optimized)."""

    def __len__(self) -> int:
        return self.z.shape[0]

    def select(self, index) -> "BigGANLatent":
        labels = None if self.labels is None else self.labels[index]
        return replace(self, z=self.z[index], y=self.y[index], labels=labels)

    def to(self, device) -> "BigGANLatent":
        return replace(self, z=self.z.to(device), y=self.y.to(device))

    def detach(self) -> "BigGANLatent":
        return replace(self, z=self.z.detach().clone(), y=self.y.detach().clone())

    @staticmethod
    def cat(latents: list["BigGANLatent"]) -> "BigGANLatent":
        require(len({l.truncation for l in latents}) == 1, "Latents with different truncation cannot be combined.")
        labels = None if any(l.labels is None for l in latents) else torch.cat([l.labels for l in latents])
        return BigGANLatent(torch.cat([l.z for l in latents]), torch.cat([l.y for l in latents]),
                            latents[0].truncation, labels)


def sample_z(count: int, dim: int, generator: torch.Generator, mode: str = "clamp") -> torch.Tensor:
    """z ~ N(0, I) clamped to [-2, 2] (official FuseDream) or resampled into it (truncated normal)."""
    require(mode in Z_MODES, f"z mode must be one of {', '.join(Z_MODES)}, got '{mode}'.")
    z = torch.randn(count, dim, generator=generator)
    if mode == "clamp":
        return z.clamp_(-Z_LIMIT, Z_LIMIT)
    outside = z.abs() > Z_LIMIT
    while outside.any():
        z[outside] = torch.randn(int(outside.sum()), generator=generator)
        outside = z.abs() > Z_LIMIT
    return z


def sample_latents(generator_model, count: int, seed: int, z_mode: str = "clamp", truncation: float = 1.0,
                   classes: Optional[list[int]] = None) -> BigGANLatent:
    """``count`` random latents: z as :func:`sample_z` (times ``truncation``), y the class embedding of a class
    drawn uniformly from ``classes`` (default: all classes). Same seed → same latents on every device."""
    require_positive("candidates", count)
    require(0 < truncation <= 1, f"truncation must be in (0, 1], got {truncation}.")
    rng = torch.Generator().manual_seed(int(seed))
    with no_grad_normal_tensors():
        z = sample_z(count, generator_model.z_dim, rng, z_mode) * truncation
        pool = torch.arange(generator_model.num_classes) if classes is None else torch.tensor(classes)
        labels = pool[torch.randint(len(pool), (count,), generator=rng)]
        y = generator_model.class_embedding(labels).detach().float().cpu()
    return BigGANLatent(z, y, truncation, labels)
