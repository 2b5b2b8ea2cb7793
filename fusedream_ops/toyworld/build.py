"""Rebuild the toy-world fixtures from scratch, deterministically:

    python -m fusedream_ops.toyworld.build tests/fixtures/toyworld          # the committed fixtures
    python -m fusedream_ops.toyworld.build /tmp/toy --smoke                 # a few steps of each (CI)

Writes a ComfyUI-style models tree: ``open_clip/toyworld_clip.safetensors`` (+ ``.json`` open_clip config),
``biggan/toyworld_biggan/`` (config.json, model.safetensors, classes.txt), ``toyworld/judge.safetensors`` and
``toyworld/build_report.json`` (the sanity numbers and how long each part took). Training runs on one CPU thread
with fixed seeds, so the same command writes the same bytes. Weights are stored in float16. A model whose file
already exists is kept (an interrupted build continues): build into an empty folder to rebuild from scratch.
"""
from __future__ import annotations

import os
import sys
from typing import Callable

import torch

from ..core.checkpoints import atomic_write, read_state_dict
from ..models.biggan import load_biggan, save_biggan
from ..models.clip import load_clip, save_clip
from ..toyworld import world
from .fixture_build import build_command, run_build, run_stages
from .judge import Judge, scene_accuracy, train_judge, world_accuracy
from .train_clip import CLIP_CONFIG, retrieval_accuracy, train_clip
from .train_generator import Z_DIM, target_images, train_generator, z_to_params

CLIP_PATH = os.path.join("open_clip", "toyworld_clip.safetensors")
BIGGAN_PATH = os.path.join("biggan", "toyworld_biggan")
ROBUST_CLIP_PATH = os.path.join("open_clip", "toyworld_clip_robust.safetensors")
JUDGE_PATH = os.path.join("toyworld", "judge.safetensors")
REPORT_PATH = os.path.join("toyworld", "build_report.json")
FULL_STEPS = {"clip": 2000, "generator": 3000, "judge": 2000, "robust_clip": 150}
SMOKE_STEPS = {"clip": 3, "generator": 3, "judge": 3, "robust_clip": 1}
ROBUST_PAIRS = 2048
ROBUST_EPS = 0.5
"""L2 radius in [0, 1] pixels at 32×32 (3072 values; CLIPAG's 1.5 is at 224×224, 150528 values)."""


def save_judge(judge: Judge, path: str) -> str:
    from safetensors.torch import save_file

    state = {k: v.detach().half().contiguous() for k, v in judge.state_dict().items()}
    atomic_write(path, lambda p: save_file(state, p))
    return path


def load_judge(path: str) -> Judge:
    from ..core.checkpoints import check_state_dict

    judge = Judge()
    state = read_state_dict(path)
    check_state_dict(judge, state, f"toy-world judge '{path}'")
    judge.load_state_dict(state, strict=True)
    return judge.eval().requires_grad_(False)


def build_robust_clip(clip_path: str, out_path: str, steps: int, pairs: int = ROBUST_PAIRS, seed: int = 5,
                      log=print) -> str:
    """The tiny CLIP adversarially fine-tuned by the pack's CLIPAG command (image tower only, PGD in pixels).

    World scenes are written as PNG + caption files, the format the command reads; lr is raised to 1e-4
    (CLIPAG's 2e-5 is for a pre-trained ViT-B/32 and moves a tiny model too little in a few hundred steps).
    """
    import tempfile

    from ..clipag.finetune.data import read_pairs, split_pairs
    from ..clipag.finetune.loop import finetune, model_config
    from ..clipag.finetune.settings import FinetuneSettings
    from ..core.images import to_pil
    from ..models.clip import load_clip as load

    count = 160 if steps <= 1 else pairs
    with tempfile.TemporaryDirectory() as folder:
        scenes = world.sample_scenes(count, seed, two_object_fraction=0.3)
        for i, (image, labels) in enumerate(zip(scenes.images, scenes.labels)):
            to_pil(image).save(os.path.join(folder, f"{i:05d}.png"))
            with open(os.path.join(folder, f"{i:05d}.txt"), "w", encoding="utf-8") as f:
                f.write(world.caption_for(labels))
        settings = FinetuneSettings(steps=steps, batch_size=64, accumulation=1, lr=1e-4, eps=ROBUST_EPS,
                                    pgd_steps=3, save_every=steps, val_fraction=0.05, val_max=100, seed=seed)
        train, val = split_pairs(read_pairs(folder), settings.val_fraction, settings.val_max, settings.seed)
        scorer = load("auto", clip_path)
        torch.manual_seed(seed)
        with tempfile.TemporaryDirectory() as run:
            last = finetune(scorer, train, val, run, model_config("auto", clip_path, scorer), settings,
                            workers=0, progress=False, echo=log)
            robust = load("auto", last).model
    save_clip(robust.half(), out_path, CLIP_CONFIG)
    return out_path


def generator_accuracy(generator, judge: Judge, count: int = 2000, seed: int = 4242,
                       margin: float = 1.0) -> tuple[float, float]:
    """How often the judge reads generator samples as the renderer drew them (centres ≥ ``margin`` px
    from a cell border only: nearer, the cell is ambiguous by construction)."""
    g = torch.Generator().manual_seed(seed)
    klass = torch.randint(world.NUM_CLASSES, (count,), generator=g)
    z = torch.randn(count, Z_DIM, generator=g).clamp(-2, 2)
    u = z_to_params(z)
    cx, cy = 3.0 + 26.0 * u[:, 0], 3.0 + 26.0 * u[:, 1]
    edge = world.IMAGE_SIZE / 3
    dist = torch.minimum((cx / edge - (cx / edge).round()).abs(), (cy / edge - (cy / edge).round()).abs()) * edge
    keep = dist >= margin
    labels = torch.zeros(count, world.NUM_CELLS, dtype=torch.long)
    labels[torch.arange(count), world.cell_of(cx, cy)] = klass + 1
    with torch.no_grad():
        images = generator(z, generator.class_embedding(klass))
        fidelity = (images - target_images(klass, z)).abs().mean().item()
    return scene_accuracy(judge, images[keep], labels[keep]), fidelity


def stages(out_dir: str, steps: dict, log=print) -> list[tuple[str, str, Callable[[], object]]]:
    """``(name, file, train-and-write)`` of each model (the robust CLIP starts from the written tiny CLIP)."""
    clip_path = os.path.join(out_dir, CLIP_PATH)
    judge_path = os.path.join(out_dir, JUDGE_PATH)
    return [
        ("clip", clip_path, lambda: save_clip(train_clip(steps=steps["clip"], log=log).half(), clip_path,
                                              CLIP_CONFIG)),
        ("generator", os.path.join(out_dir, BIGGAN_PATH, "model.safetensors"),
         lambda: save_biggan(train_generator(steps=steps["generator"], log=log).half(),
                             os.path.join(out_dir, BIGGAN_PATH), list(world.CLASS_NAMES))),
        ("judge", judge_path, lambda: save_judge(train_judge(steps=steps["judge"], log=log), judge_path)),
        ("robust_clip", os.path.join(out_dir, ROBUST_CLIP_PATH),
         lambda: build_robust_clip(clip_path, os.path.join(out_dir, ROBUST_CLIP_PATH), steps["robust_clip"],
                                   log=log)),
    ]


def evaluate(out_dir: str, count: int) -> dict:
    """Sanity numbers, measured on what was written (float16 round trip included)."""
    scorer = load_clip("auto", os.path.join(out_dir, CLIP_PATH))
    loaded_generator = load_biggan(os.path.join(out_dir, BIGGAN_PATH))
    loaded_judge = load_judge(os.path.join(out_dir, JUDGE_PATH))
    report = {}
    report["clip_retrieval_top1"] = round(retrieval_accuracy(scorer.model, count), 4)
    report["clip_retrieval_top1_single_object"] = round(
        retrieval_accuracy(scorer.model, count, two_object_fraction=0.0), 4)
    report["judge_accuracy_world"] = round(world_accuracy(loaded_judge, 2 * count), 4)
    accuracy, fidelity = generator_accuracy(loaded_generator, loaded_judge, count)
    report["judge_accuracy_generator_samples"] = round(accuracy, 4)
    report["generator_mean_abs_error_vs_renderer"] = round(fidelity, 4)
    return report


def build(out_dir: str, smoke: bool = False, log=print) -> dict:
    """Train the tiny CLIP, generator and judge, write them under ``out_dir`` and return the build report."""
    steps = SMOKE_STEPS if smoke else FULL_STEPS
    return run_build(out_dir, REPORT_PATH, smoke, steps, lambda: run_stages(stages(out_dir, steps, log), log),
                     lambda: evaluate(out_dir, 64 if smoke else 2000))


def main(argv=None) -> int:
    return build_command(argv, "fusedream_ops.toyworld.build", __doc__, build,
                         "folder to write the models tree into (e.g. tests/fixtures/toyworld)")


if __name__ == "__main__":
    sys.exit(main())
