"""The independent judge: a small CNN that reads every object's shape, colour and cell.

Different architecture (a convnet, not a ViT) and different data seed from the tiny CLIP, trained with
plain supervision on the world's labels. It outputs, for each of the 9 cells, "empty" or one of the 16
shape × colour classes centred there (:mod:`world` labels). A scene is read correctly when all 9 cells are.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..toyworld import world


class Judge(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
                                  nn.Linear(128, world.NUM_CELLS * (world.NUM_CLASSES + 1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 9, 17]`` for images ``[B,3,32,32]`` in 0..1."""
        return self.head(self.features(images * 2 - 1)).view(-1, world.NUM_CELLS, world.NUM_CLASSES + 1)

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> torch.Tensor:
        """Labels ``[B,9]`` (0 = empty cell, 1 + class otherwise)."""
        return self(images.float()).argmax(-1)


def _world_training_scenes(count: int, seed: int) -> world.Scenes:
    """The judge's default training scenes: world scenes, 30 % with two objects."""
    return world.sample_scenes(count, seed, two_object_fraction=0.3)


def train_cell_classifier(make_model: Callable[[], nn.Module], name: str, steps: int, batch: int, seed: int,
                          lr: float, log: Optional[Callable[[str], None]],
                          sampler: Callable[[int, int], world.Scenes]) -> nn.Module:
    """A model of per-cell logits ``[B,9,17]`` trained by cross-entropy per cell on fresh scenes every step,
    ``sampler(count, seed)``: AdamW, cosine learning-rate decay. ``make_model`` runs after ``torch.manual_seed(seed)``,
    so the initial weights are fixed too; ``name`` starts the log lines."""
    torch.manual_seed(seed)
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    start = time.time()
    for step in range(steps):
        scenes = sampler(batch, seed * 1_000_003 + step)
        loss = F.cross_entropy(model(scenes.images).flatten(0, 1), scenes.labels.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and (step % 200 == 0 or step == steps - 1):
            log(f"{name} step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - start:.0f} s)")
    return model.eval()


def train_judge(steps: int = 2000, batch: int = 128, seed: int = 3, lr: float = 2e-3,
                log: Optional[Callable[[str], None]] = None,
                sampler: Optional[Callable[[int, int], world.Scenes]] = None) -> Judge:
    """The judge by :func:`train_cell_classifier` on ``sampler(count, seed)`` (default: world scenes, 30 % with two
    objects)."""
    return train_cell_classifier(Judge, "judge", steps, batch, seed, lr, log, sampler or _world_training_scenes)


def scene_accuracy(judge: Judge, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of scenes whose 9 cells are all read correctly."""
    return (judge.read(images) == labels).all(-1).float().mean().item()


def world_accuracy(judge: Judge, count: int = 4000, seed: int = 999, two_object_fraction: float = 0.3) -> float:
    """Accuracy on fresh world scenes (a seed no model was trained on)."""
    scenes = world.sample_scenes(count, seed, two_object_fraction)
    return scene_accuracy(judge, scenes.images, scenes.labels)
