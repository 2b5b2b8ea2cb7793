"""The adversary of CLIPAG's training: L2 PGD on CLIP's image-text contrastive loss."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ...models.clip import ClipScorer
from .settings import FinetuneSettings


# ---------------------------------------------------------------- loss and attack
def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over a batch of matching pairs (features L2-normalised)."""
    logits = logit_scale * image_features @ text_features.t()
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def pgd_l2(images: torch.Tensor, loss_of: Callable[[torch.Tensor], torch.Tensor], eps: float, steps: int,
           step_size: float) -> torch.Tensor:
    """Projected gradient ascent on ``loss_of(images + δ)`` with ‖δ_i‖₂ ≤ ``eps`` and images in [0, 1].

    Each step moves δ by ``step_size`` along the L2-normalised gradient, projects onto the ball and clips the
    pixels; it starts at δ = 0 (deterministic). Only δ gets gradients: weights' ``.grad`` are left untouched.
    """
    if steps <= 0 or eps <= 0:
        return images.detach()
    images = images.detach()
    delta = torch.zeros_like(images, requires_grad=True)
    shape = (-1,) + (1,) * (images.ndim - 1)
    for _ in range(steps):
        (grad,) = torch.autograd.grad(loss_of(images + delta), delta)
        with torch.no_grad():
            delta += step_size * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
            delta *= (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0).view(shape)
            delta.copy_((images + delta).clamp(0, 1) - images)
    return (images + delta).detach()


class ImageTower(torch.nn.Module):
    """CLIP's normalisation + image encoder → L2-normalised features: the module DDP wraps and AdamW trains.

    With ``autocast`` (e.g. ``torch.bfloat16``) the encoder runs under autocast; weights and optimizer stay fp32.
    """

    def __init__(self, scorer: ClipScorer, autocast: torch.dtype | None = None):
        super().__init__()
        self.visual = scorer.model.visual
        self.register_buffer("mean", scorer.mean.clone(), persistent=False)
        self.register_buffer("std", scorer.std.clone(), persistent=False)
        self.size = scorer.image_size
        self.autocast = autocast

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != self.size:
            images = F.interpolate(images, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        with torch.autocast(images.device.type, dtype=self.autocast or torch.float32,
                            enabled=self.autocast is not None):
            features = self.visual((images - self.mean) / self.std)
        return F.normalize(features.float(), dim=-1)


def attack_batch(tower: torch.nn.Module, images: torch.Tensor, text_features: torch.Tensor, logit_scale,
                 settings: FinetuneSettings) -> torch.Tensor:
    """PGD on the batch's contrastive loss (the training attack)."""
    return pgd_l2(images, lambda x: contrastive_loss(tower(x), text_features, logit_scale),
                  settings.eps, settings.pgd_steps, settings.step_size)
