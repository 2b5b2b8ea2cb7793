"""The composition world as the measurements use it: its trained models through the pack's own loaders, and
two-object captions.

The models (:mod:`build_composition`) are a BigGAN-format generator of one object of any size (3.2–10 px radius)
per image, an open_clip CLIP, an LPIPS whose AlexNet trunk was trained on the world (torchvision's file) and the
judge, all trained on the scenes of :mod:`composition_scenes`. The generator, like BigGAN with its one class label
per image, draws a single object: a caption naming two objects can only be met by composing two images.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..models.biggan import BigGANGenerator, load_biggan
from ..models.clip import ClipScorer, load_clip
from ..models.lpips import PerceptualDistance, load_lpips
from ..toyworld import world
from .build import load_judge
from .build_composition import BIGGAN_PATH, CLIP_PATH, JUDGE_PATH, LPIPS_PATH
from .judge import Judge

COMPOSITION_FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                    "tests", "fixtures", "toyworld", "composition")
OPPOSITE_PAIRS = ((3, 5), (1, 7))
"""(left, right) and (top, bottom): the cells of the two-object captions."""


@dataclass
class CompositionWorld:
    generator: BigGANGenerator
    scorer: ClipScorer
    perceptual: PerceptualDistance
    judge: Judge
    """``judge.read(images [B,3,S,S] in 0..1)`` → labels ``[B,9]`` (:mod:`world`: 0 empty, 1 + class)."""
    image_size: int


def load_composition_world(models_dir: str = COMPOSITION_FIXTURES) -> CompositionWorld:
    """The generator, CLIP, LPIPS (AlexNet trunk from ``lpips/alexnet-owt-7be5be79.pth``) and judge under
    ``models_dir``, each through the pack's own loader."""
    return CompositionWorld(
        generator=load_biggan(os.path.join(models_dir, BIGGAN_PATH)),
        scorer=load_clip("auto", os.path.join(models_dir, CLIP_PATH)),
        perceptual=load_lpips("alex", backbone=os.path.join(models_dir, LPIPS_PATH)),
        judge=load_judge(os.path.join(models_dir, JUDGE_PATH)),
        image_size=world.IMAGE_SIZE,
    )


def two_object_captions(count: int, seed: int) -> list[tuple[str, torch.Tensor]]:
    """``count`` captions of two objects of different classes in opposite cells, alternating left/right and
    top/bottom ("a red circle on the left and a blue square on the right"), with their labels ``[9]``; the same
    ``seed`` gives the same list."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        first = int(torch.randint(world.NUM_CLASSES, (1,), generator=g))
        second = (first + int(torch.randint(1, world.NUM_CLASSES, (1,), generator=g))) % world.NUM_CLASSES
        labels = torch.zeros(world.NUM_CELLS, dtype=torch.long)
        a, b = OPPOSITE_PAIRS[i % len(OPPOSITE_PAIRS)]
        labels[a], labels[b] = first + 1, second + 1
        out.append((world.caption_for(labels), labels))
    return out
