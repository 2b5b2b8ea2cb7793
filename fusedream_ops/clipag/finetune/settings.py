"""The fine-tuning settings (the paper's recipe as defaults)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class FinetuneSettings:
    steps: int = 1000
    """Optimizer updates (each over ``accumulation`` batches)."""
    batch_size: int = 32
    """Pairs per batch and process; the contrastive loss needs at least 2."""
    accumulation: int = 10
    lr: float = 2e-5
    weight_decay: float = 1e-4
    eps: float = 1.5
    """L2 radius of the attack in [0, 1] pixel units at the model's input size."""
    pgd_steps: int = 3
    pgd_step_size: float | None = None
    """None = 2.5·ε / pgd_steps (Madry et al.'s rule)."""
    save_every: int = 100
    precision: str = "fp32"
    """fp32, or bf16 autocast for the image encoder's forward passes (attack and update)."""
    val_fraction: float = 0.05
    val_max: int = 500
    seed: int = 0

    @property
    def step_size(self) -> float:
        return self.pgd_step_size if self.pgd_step_size is not None else 2.5 * self.eps / max(1, self.pgd_steps)
