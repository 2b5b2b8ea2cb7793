"""An LPIPS backbone for the toy world: torchvision's AlexNet trunk, trained on world scenes, in torchvision's file.

LPIPS's AlexNet heads (bundled with the ``lpips`` package) weigh the channels of torchvision's ``alexnet().features``
(64/192/384/256/256 after the five ReLUs). Here only the first :data:`TRAINED_CHANNELS` of each layer are trained —
supervised per-cell classification (empty or one of the 16 classes, as the judge) through a small head that is
thrown away: a linear layer on relu2, whose 3×3 map at 32 px lines up with the grid cells, and on relu5, the
global feature. Every other channel is exactly zero (weights and bias), so its ReLU output is zero and adds nothing
to LPIPS, and the file compresses: it is written as torchvision's ``alexnet-owt-7be5be79.pth`` (a ``torch.save``'d
``features.*`` state dict, float16; the classifier, which LPIPS never reads, is left out) and loads through the
pack's :func:`~fusedream_ops.models.lpips.load_lpips` exactly as the real file does.
"""
from __future__ import annotations

import io
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..toyworld import world
from .composition_scenes import training_scenes
from .judge import train_cell_classifier

FULL_CHANNELS = (64, 192, 384, 256, 256)
TRAINED_CHANNELS = (16, 48, 96, 64, 64)
CONV_INDICES = (0, 3, 6, 8, 10)
"""Positions of the five convolutions in torchvision's ``alexnet().features``."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NarrowAlexNet(nn.Module):
    """torchvision's AlexNet trunk (same kernels, strides, paddings, pools) with :data:`TRAINED_CHANNELS`, plus the
    training head."""

    def __init__(self, channels: tuple[int, ...] = TRAINED_CHANNELS):
        super().__init__()
        c1, c2, c3, c4, c5 = channels
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(c2 * 9 + c5, world.NUM_CELLS * (world.NUM_CLASSES + 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Per-cell logits ``[B,9,17]`` of ``[B,3,32,32]`` images in 0..1 (ImageNet-normalised as torchvision's)."""
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        x = (images - mean) / std
        relu2 = self.features[:5](x)
        relu5 = self.features[5:](relu2)
        cells = F.adaptive_avg_pool2d(relu2, 3).flatten(1)
        return self.head(torch.cat([cells, relu5.amax((2, 3))], 1)).view(-1, world.NUM_CELLS, world.NUM_CLASSES + 1)


def train_alexnet(steps: int = 1000, batch: int = 64, seed: int = 6, lr: float = 2e-3,
                  log: Optional[Callable[[str], None]] = None,
                  sampler: Callable[[int, int], world.Scenes] = training_scenes) -> NarrowAlexNet:
    """Per-cell cross-entropy on fresh :func:`training_scenes` every step, as the judge is trained
    (:func:`~.judge.train_cell_classifier`)."""
    return train_cell_classifier(NarrowAlexNet, "alexnet", steps, batch, seed, lr, log, sampler)


@torch.no_grad()
def torchvision_features(model: NarrowAlexNet) -> dict[str, torch.Tensor]:
    """The trunk as torchvision's ``features.*`` state dict at full width: trained channels first, the rest zero."""
    state = {}
    inputs = 3
    for index, full, trained in zip(CONV_INDICES, FULL_CHANNELS, TRAINED_CHANNELS):
        conv = model.features[index]
        weight = torch.zeros(full, FULL_CHANNELS[CONV_INDICES.index(index) - 1] if index else 3, *conv.kernel_size)
        weight[:trained, :inputs] = conv.weight
        bias = torch.zeros(full)
        bias[:trained] = conv.bias
        state[f"features.{index}.weight"] = weight
        state[f"features.{index}.bias"] = bias
        inputs = trained
    return state


def alexnet_file_bytes(model: NarrowAlexNet) -> bytes:
    """torchvision's checkpoint format (``torch.save`` of the state dict), float16, written to memory so that the
    bytes do not depend on the file name (``torch.save`` names its archive after the file it writes)."""
    buffer = io.BytesIO()
    torch.save({k: v.half().contiguous() for k, v in torchvision_features(model).items()}, buffer)
    return buffer.getvalue()


def content_pairs(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triplets of one-object scenes ``[count,3,32,32]`` each: an anchor; the *same scene* re-rendered (same
    object, class and cell, with another jitter, size, background grey and stripes); a *different scene* (another
    class in another cell) on exactly the anchor's background. A perceptual distance should put the same scene
    nearer than the different one; a pixel distance does not (the background change moves every pixel)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(count, 3, 8, generator=g)
    klass = torch.randint(world.NUM_CLASSES, (count,), generator=g)
    other = (klass + torch.randint(1, world.NUM_CLASSES, (count,), generator=g)) % world.NUM_CLASSES
    cell = torch.randint(world.NUM_CELLS, (count,), generator=g)
    other_cell = (cell + torch.randint(1, world.NUM_CELLS, (count,), generator=g)) % world.NUM_CELLS
    cell_px = world.IMAGE_SIZE / 3

    def draw(k, c, p, b):
        canvas = world.background(0.08 + 0.32 * b[:, 0], 0.08 * (b[:, 1] > 0.5) * b[:, 2], math.pi * b[:, 3])
        cx = ((c % 3).float() + 0.5) * cell_px + (p[:, 4] - 0.5) * 5.0
        cy = ((c // 3).float() + 0.5) * cell_px + (p[:, 5] - 0.5) * 5.0
        return world.paint(canvas, k, cx, cy, 3.2 + 1.8 * p[:, 6]).clamp(0, 1)

    anchor = draw(klass, cell, u[:, 0], u[:, 0])
    same = draw(klass, cell, u[:, 1], u[:, 1])
    different = draw(other, other_cell, u[:, 2], u[:, 0])
    return anchor, same, different


@torch.no_grad()
def separation(perceptual, count: int = 256, seed: int = 31) -> dict[str, float]:
    """Mean LPIPS of same-scene and different-scene pairs (:func:`content_pairs`) and the fraction of triplets
    where the same scene is the nearer one."""
    anchor, same, different = content_pairs(count, seed)
    d_same, d_diff = perceptual(anchor, same), perceptual(anchor, different)
    return {"same_scene": round(d_same.mean().item(), 4), "different_scene": round(d_diff.mean().item(), 4),
            "same_nearer": round((d_same < d_diff).float().mean().item(), 4)}
