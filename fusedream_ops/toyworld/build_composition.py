"""Rebuild the composition world's fixtures from scratch, deterministically:

    python -m fusedream_ops.toyworld.build_composition tests/fixtures/toyworld/composition   # the committed ones
    python -m fusedream_ops.toyworld.build_composition /tmp/comp --smoke                     # a few steps (CI)

Writes a ComfyUI-style models tree: ``biggan/toyworld_composition_biggan/`` (config.json, model.safetensors,
classes.txt), ``open_clip/toyworld_composition_clip.safetensors`` (+ ``.json``), ``lpips/alexnet-owt-7be5be79.pth``
(torchvision's file name and format), ``toyworld/composition_judge.safetensors`` and
``toyworld/composition_build_report.json`` (sanity numbers and how long each part took). The first half's
training functions run on the composition world's scenes (:mod:`composition_scenes`), one CPU thread, fixed seeds,
float16 weights, so the same command writes the same bytes. A model whose file exists is kept (an interrupted
build continues): build into an empty folder to rebuild from scratch.
"""
from __future__ import annotations

import os
import sys
from typing import Callable

import torch

from ..core.checkpoints import atomic_write
from ..models.biggan import load_biggan, save_biggan
from ..models.clip import load_clip, save_clip
from ..models.lpips import BACKBONE_FILES, load_lpips
from ..toyworld import composition_scenes as scenes
from ..toyworld import world
from .build import load_judge, save_judge
from .fixture_build import build_command, run_build, run_stages
from .judge import Judge, scene_accuracy, train_judge
from .train_alexnet import alexnet_file_bytes, separation, train_alexnet
from .train_clip import CLIP_CONFIG, retrieval_accuracy, train_clip
from .train_generator import Z_DIM, object_weights, train_generator, z_to_params

CLIP_PATH = os.path.join("open_clip", "toyworld_composition_clip.safetensors")
BIGGAN_PATH = os.path.join("biggan", "toyworld_composition_biggan")
LPIPS_PATH = os.path.join("lpips", BACKBONE_FILES["alex"][0])
JUDGE_PATH = os.path.join("toyworld", "composition_judge.safetensors")
REPORT_PATH = os.path.join("toyworld", "composition_build_report.json")
FULL_STEPS = {"clip": 4000, "generator": 4000, "judge": 2000, "alexnet": 1500}
SMOKE_STEPS = {"clip": 3, "generator": 3, "judge": 3, "alexnet": 3}
LARGE_RADIUS = 6.4
"""Generator objects at least this large are foregrounds: shrunk by α = 0.5 they keep the world's 3.2 px."""
NORMAL_RADIUS = 5.0
"""The first half's largest radius: objects up to this size are the world's normal objects."""


def target_images(klass: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """What the composition generator must draw for class ``klass`` and noise ``z``: images in 0..1."""
    return scenes.render(klass, z_to_params(z))


def size_balanced_weights(klass: torch.Tensor, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The first half's object weights with the object weight scaled by (4.1 px / radius)², clamped to 0.25–1:
    unscaled, a 10-px object weighs ~6× a normal one in the batch and normal objects came out blurry."""
    _, _, radius = scenes.layout(z_to_params(z))
    scale = (4.1 / radius).pow(2).clamp(0.25, 1.0)
    return object_weights(klass, z, target, weight=(20.0 * scale).view(-1, 1, 1, 1))


def generator_samples(generator, count: int, seed: int, margin: float = 1.0):
    """``count`` generator samples with the labels of what the renderer drew, their radius, whether their centre
    is ≥ ``margin`` px from a cell border, and the mean absolute error against the renderer."""
    g = torch.Generator().manual_seed(seed)
    klass = torch.randint(world.NUM_CLASSES, (count,), generator=g)
    z = torch.randn(count, Z_DIM, generator=g).clamp(-2, 2)
    cx, cy, radius = scenes.layout(z_to_params(z))
    edge = world.IMAGE_SIZE / 3
    dist = torch.minimum((cx / edge - (cx / edge).round()).abs(), (cy / edge - (cy / edge).round()).abs()) * edge
    labels = torch.zeros(count, world.NUM_CELLS, dtype=torch.long)
    labels[torch.arange(count), world.cell_of(cx, cy)] = klass + 1
    with torch.no_grad():
        images = generator(z, generator.class_embedding(klass))
        fidelity = (images - target_images(klass, z)).abs().mean().item()
    return images, labels, radius, dist >= margin, fidelity


def judge_report(judge: Judge, count: int) -> dict:
    """The judge's exact-reading rate on fresh scenes of every kind it meets (seeds no model trained on)."""
    fused = scenes.fused_scenes(count, 9001)
    out = {
        "single_object": scene_accuracy(judge, *_scenes(world.sample_scenes(count, 999, 0.0))),
        "two_objects": scene_accuracy(judge, *_scenes(world.sample_scenes(count, 998, 1.0))),
        "single_object_any_size_and_position": scene_accuracy(judge, *_scenes(scenes.single_objects(count, 997))),
        "fused": scene_accuracy(judge, fused.images, fused.labels),
    }
    return {k: round(v, 4) for k, v in out.items()}


def _scenes(s: world.Scenes):
    return s.images, s.labels


def legibility_report(judge: Judge, per_cell: int, aimed: bool = False) -> dict:
    """The judge on ``fuse`` of a centred (or ``aimed``) foreground at α = 0.5 and 0.65 at the 9 positions: the
    rate of scenes whose objects are all read."""
    fused, cells = scenes.centred_fused_scenes(per_cell, 4321, aimed=aimed)
    correct = (judge.read(fused.images) == fused.labels).all(-1)
    out = {}
    for scale in (0.5, 0.65):
        by_position = {}
        for position in dict.fromkeys(p for _, p in cells):
            pick = torch.tensor([c == (scale, position) for c in cells])
            by_position[position] = round(correct[pick].float().mean().item(), 4)
        pick = torch.tensor([c[0] == scale for c in cells])
        out[str(scale)] = {"all_positions": round(correct[pick].float().mean().item(), 4), "by_position": by_position}
    return out


def stages(out_dir: str, steps: dict, log=print) -> list[tuple[str, str, Callable[[], object]]]:
    """``(name, file, train-and-write)`` of each model; each stage seeds itself, so they can run in any order
    (or in parallel processes) and write the same bytes."""
    clip_path, judge_path, lpips_path, biggan_dir = (os.path.join(out_dir, p) for p in
                                                     (CLIP_PATH, JUDGE_PATH, LPIPS_PATH, BIGGAN_PATH))
    return [
        ("clip", clip_path, lambda: save_clip(
            train_clip(steps=steps["clip"], seed=11, sampler=scenes.captioned_training_scenes, log=log).half(),
            clip_path, CLIP_CONFIG)),
        ("generator", os.path.join(biggan_dir, "model.safetensors"), lambda: save_biggan(
            train_generator(steps=steps["generator"], seed=12, renderer=target_images, weights=size_balanced_weights,
                            log=log).half(),
            biggan_dir, list(world.CLASS_NAMES))),
        ("judge", judge_path, lambda: save_judge(
            train_judge(steps=steps["judge"], seed=13, sampler=scenes.training_scenes, log=log), judge_path)),
        ("alexnet", lpips_path, lambda: atomic_write(lpips_path, lambda p: _write_bytes(
            p, alexnet_file_bytes(train_alexnet(steps=steps["alexnet"], seed=14, log=log))))),
    ]


def evaluate(out_dir: str, smoke: bool) -> dict:
    """Sanity numbers, measured on what was written (float16 round trip included), through the pack's loaders."""
    count = 64 if smoke else 1000
    clip_path, judge_path, lpips_path, biggan_dir = (os.path.join(out_dir, p) for p in
                                                     (CLIP_PATH, JUDGE_PATH, LPIPS_PATH, BIGGAN_PATH))
    scorer = load_clip("auto", clip_path)
    generator = load_biggan(biggan_dir)
    judge = load_judge(judge_path)
    report = {}
    report["judge_accuracy"] = judge_report(judge, count)
    report["judge_reads_fused_centred_foreground"] = legibility_report(judge, 4 if smoke else 60)
    report["judge_reads_fused_foreground_aimed_at_the_cell_centre"] = legibility_report(
        judge, 4 if smoke else 60, aimed=True)
    images, labels, radius, clear, fidelity = generator_samples(generator, 2 * count, 4242)
    read = (judge.read(images) == labels).all(-1)
    report["judge_accuracy_generator_samples"] = {
        "large_radius_6.4_to_10": round(read[clear & (radius >= LARGE_RADIUS)].float().mean().item(), 4),
        "normal_radius_3.2_to_5": round(read[clear & (radius <= NORMAL_RADIUS)].float().mean().item(), 4),
        "all": round(read[clear].float().mean().item(), 4),
    }
    report["generator_mean_abs_error_vs_renderer"] = round(fidelity, 4)
    report["clip_retrieval_top1"] = {
        "training_mix": round(retrieval_accuracy(scorer.model, count, sampler=scenes.captioned_training_scenes), 4),
        "single_object": round(retrieval_accuracy(scorer.model, count, two_object_fraction=0.0), 4),
        "two_objects": round(retrieval_accuracy(scorer.model, count, two_object_fraction=1.0), 4),
    }
    torch.manual_seed(0)
    pairs = 32 if smoke else 256
    report["lpips_separation"] = {
        "trained": separation(load_lpips("alex", backbone=lpips_path), pairs),
        "random_backbone": separation(load_lpips("alex", random_backbone=True), pairs)}
    return report


def build(out_dir: str, smoke: bool = False, log=print) -> dict:
    """Train the composition world's CLIP, generator, judge and LPIPS AlexNet, write them, return the report."""
    steps = SMOKE_STEPS if smoke else FULL_STEPS
    return run_build(out_dir, REPORT_PATH, smoke, steps, lambda: run_stages(stages(out_dir, steps, log), log),
                     lambda: evaluate(out_dir, smoke))


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def main(argv=None) -> int:
    return build_command(argv, "fusedream_ops.toyworld.build_composition", __doc__, build,
                         "folder to write the models tree into (tests/fixtures/toyworld/composition)")


if __name__ == "__main__":
    sys.exit(main())
