"""CLIPAG adversarial fine-tuning: make an open_clip image encoder robust so its input gradients become
perceptually aligned (Ganz & Elad 2023). The authors released no training code; this follows the paper's recipe.

For every batch of image-caption pairs: PGD in pixel space ([0, 1] units) finds δ with ‖δ‖₂ ≤ ε (1.5) that
maximises CLIP's image-text contrastive loss, then AdamW (lr 2e-5, weight decay 1e-4, gradients accumulated over
10 batches) updates the IMAGE encoder only to minimise that loss on the adversarial images. The text encoder and
the logit scale stay frozen.

    python -m fusedream_ops.clipag_finetune --data pairs/ --checkpoint ViT-B-32.safetensors --out runs/clipag
    torchrun --nproc_per_node 4 -m fusedream_ops.clipag_finetune ...   # several GPUs, DistributedDataParallel

Data: a folder of images each with a same-stem ``.txt`` caption, or a CSV (``--csv-img-key``/``--csv-caption-key``,
paths relative to the CSV). A seeded share of the pairs is held out for the sanity metric: image→caption top-1
retrieval among the held-out captions, clean and under the same PGD attack. Every ``--save-every`` steps the
fine-tuned model is written as ``<out>/clipag-stepNNNNNN.safetensors`` with its open_clip config beside it (the
pack's CLIP loader reads it with architecture ``auto``), together with ``<out>/resume.pt``; running the same
command again continues from there.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from .checkpoints import atomic_write, check_state_dict
from .clip_scorer import AUTO, ClipScorer, load_clip, read_sidecar, save_clip
from .errors import FuseDreamError, require
from .init_images import IMAGE_EXTENSIONS, square_resize
from .images import from_pil
from .safety.image_files import read_image


RESUME_FILE = "resume.pt"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
MAX_LISTED = 5


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


# ---------------------------------------------------------------- data
def pairs_from_folder(folder: str) -> list[tuple[str, str]]:
    """``(image path, caption)`` for every image of ``folder`` (recursively) with a same-stem ``.txt`` beside it."""
    images, missing = [], []
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                path = os.path.join(root, name)
                caption = os.path.splitext(path)[0] + ".txt"
                (images if os.path.isfile(caption) else missing).append(path)
    require(not missing, f"data folder '{folder}': {len(missing)} image(s) have no same-stem .txt caption, e.g. "
                         f"{', '.join(missing[:MAX_LISTED])}. Add a caption file beside each image.")
    pairs = []
    for path in images:
        with open(os.path.splitext(path)[0] + ".txt", encoding="utf-8") as f:
            caption = f.read().strip()
        require(bool(caption), f"caption file for '{path}' is empty.")
        pairs.append((path, caption))
    return pairs


def pairs_from_csv(path: str, img_key: str = "filepath", caption_key: str = "title",
                   separator: str = ",") -> list[tuple[str, str]]:
    """Pairs from a CSV with a header; relative image paths are relative to the CSV's folder."""
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=separator)
        columns = reader.fieldnames or []
        require(img_key in columns and caption_key in columns,
                f"CSV '{path}' needs columns '{img_key}' and '{caption_key}' (--csv-img-key, --csv-caption-key); "
                f"it has: {', '.join(columns) or 'no header'}.")
        pairs = [(os.path.join(base, row[img_key]), (row[caption_key] or "").strip()) for row in reader]
    missing = [p for p, _ in pairs if not os.path.isfile(p)]
    require(not missing, f"CSV '{path}': {len(missing)} image(s) do not exist, e.g. {', '.join(missing[:MAX_LISTED])}.")
    empty = [p for p, c in pairs if not c]
    require(not empty, f"CSV '{path}': {len(empty)} row(s) have an empty caption, e.g. "
                       f"{', '.join(empty[:MAX_LISTED])}.")
    return pairs


def read_pairs(source: str, img_key: str = "filepath", caption_key: str = "title",
               separator: str = ",") -> list[tuple[str, str]]:
    if os.path.isdir(source):
        pairs = pairs_from_folder(source)
    else:
        require(os.path.isfile(source), f"--data '{source}' is neither a folder of image+caption pairs nor a CSV.")
        pairs = pairs_from_csv(source, img_key, caption_key, separator)
    require(len(pairs) >= 2, f"--data '{source}' holds {len(pairs)} pair(s); at least 2 are needed.")
    return pairs


def split_pairs(pairs: list, val_fraction: float, val_max: int, seed: int) -> tuple[list, list]:
    """A seeded held-out split (at least 2 pairs, so retrieval means something, when there are 4 or more)."""
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(int(seed) + 1)).tolist()
    n_val = min(val_max, int(round(len(pairs) * val_fraction))) if val_fraction > 0 else 0
    if 0 < n_val < 2:
        n_val = 2 if len(pairs) >= 4 else 0
    val = [pairs[i] for i in sorted(order[:n_val])]
    train = [pairs[i] for i in sorted(order[n_val:])]
    return train, val


class PairDataset(torch.utils.data.Dataset):
    """Images centre-cropped and resized to the model's input size, in [0, 1], with their captions."""

    def __init__(self, pairs: list[tuple[str, str]], size: int):
        self.pairs = pairs
        self.size = size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        path, caption = self.pairs[index]
        return square_resize(from_pil(read_image(path, shrink_to=self.size)), self.size)[0], caption


class ResumableBatches(torch.utils.data.Sampler):
    """Endless batches: each epoch is a seeded permutation cut into global batches of ``batch·world`` pairs,
    rank r taking every world-th pair; starting at batch ``start`` reproduces an uninterrupted run exactly."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        self.n, self.batch, self.seed, self.rank, self.world, self.start = n, batch, seed, rank, world, start
        self.per_epoch = n // (batch * world)
        require(self.per_epoch >= 1, f"{n} training pairs are fewer than one batch of {batch} per process "
                                     f"× {world} process(es); lower --batch-size or add data.")

    def __iter__(self) -> Iterator[list[int]]:
        index = self.start
        while True:
            epoch, position = divmod(index, self.per_epoch)
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            chunk = order[position * self.batch * self.world:(position + 1) * self.batch * self.world]
            yield chunk[self.rank::self.world].tolist()
            index += 1


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


@torch.no_grad()
def _features(tower, images):
    return tower(images)


def retrieval_top1(tower: torch.nn.Module, scorer: ClipScorer, pairs: list[tuple[str, str]], settings: FinetuneSettings,
                   device: torch.device, attack: bool) -> float:
    """Share of held-out images whose own caption is the best match among all held-out captions (optionally
    after PGD against exactly that: cross-entropy of the image over all held-out captions)."""
    size = scorer.image_size[0]
    data = PairDataset(pairs, size)
    text = scorer.encode_text([c for _, c in pairs]).to(device)
    scale = scorer.model.logit_scale.exp().detach()
    correct = 0
    for start in range(0, len(pairs), settings.batch_size):
        images = torch.stack([data[i][0] for i in range(start, min(start + settings.batch_size, len(pairs)))])
        images = images.to(device)
        target = torch.arange(start, start + images.shape[0], device=device)
        if attack:
            images = pgd_l2(images, lambda x: F.cross_entropy(scale * tower(x) @ text.t(), target),
                            settings.eps, settings.pgd_steps, settings.step_size)
        correct += int(((_features(tower, images) @ text.t()).argmax(dim=1) == target).sum())
    return correct / len(pairs)


# ---------------------------------------------------------------- checkpoints
def model_config(arch: str, checkpoint: str, scorer: ClipScorer) -> dict:
    """The open_clip config of the loaded model, written beside every checkpoint so ``auto`` loads it exactly."""
    import open_clip

    sidecar = read_sidecar(checkpoint) if arch == AUTO else None
    if sidecar is not None:
        return sidecar["model_cfg"]
    cfg = open_clip.get_model_config(scorer.name)
    require(cfg is not None, f"no open_clip config is known for architecture '{scorer.name}'.")
    return cfg


def checkpoint_path(out_dir: str, step: int) -> str:
    return os.path.join(out_dir, f"clipag-step{step:06d}.safetensors")


def prune_checkpoints(out_dir: str, keep: int) -> None:
    """Delete all but the newest ``keep`` step checkpoints (and their configs); ``keep`` 0 keeps every one."""
    if keep <= 0:
        return
    names = sorted(n for n in os.listdir(out_dir) if n.startswith("clipag-step") and n.endswith(".safetensors"))
    for name in names[:-keep]:
        for path in (os.path.join(out_dir, name), os.path.join(out_dir, name[:-len(".safetensors")] + ".json")):
            if os.path.exists(path):
                os.remove(path)


RESUME_KEYS = ("batch_size", "accumulation", "seed", "eps", "pgd_steps", "pgd_step_size", "val_fraction", "val_max")


def save_resume(out_dir: str, step: int, visual: torch.nn.Module, optimizer, settings: FinetuneSettings,
                world: int) -> str:
    path = os.path.join(out_dir, RESUME_FILE)
    state = {"step": step, "world": world, "settings": asdict(settings),
             "visual": {k: v.detach().cpu() for k, v in visual.state_dict().items()},
             "optimizer": optimizer.state_dict()}
    atomic_write(path, lambda p: torch.save(state, p))
    return path


def load_resume(out_dir: str, visual: torch.nn.Module, optimizer, settings: FinetuneSettings, world: int) -> int:
    """Restore weights and optimizer from ``<out>/resume.pt`` and return its step (0 when there is none)."""
    path = os.path.join(out_dir, RESUME_FILE)
    if not os.path.isfile(path):
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FuseDreamError(f"resume state '{path}' could not be read ({type(exc).__name__}: {exc}); delete it to "
                             f"start over.") from None
    saved = state["settings"]
    changed = [f"{k} {saved.get(k)} → {getattr(settings, k)}"
               for k in RESUME_KEYS if saved.get(k) != getattr(settings, k)]
    if state.get("world", 1) != world:
        changed.append(f"processes {state.get('world', 1)} → {world}")
    require(not changed, f"'{path}' was made with other settings ({'; '.join(changed)}): use the same settings to "
                         f"resume, or another --out folder to start over.")
    check_state_dict(visual, state["visual"], f"resume state '{path}'",
                     hint=lambda: "Was it made from another --checkpoint? Use another --out folder to start over.")
    visual.load_state_dict(state["visual"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


# ---------------------------------------------------------------- training
@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def start_runtime(device: str | None) -> Runtime:
    """torchrun (``WORLD_SIZE`` > 1): one process per GPU with NCCL (gloo on CPU); otherwise one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        cuda = torch.cuda.is_available() and device != "cpu"
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = torch.device("cuda", local) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(dev)
        return Runtime(dev, torch.distributed.get_rank(), world)
    return Runtime(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))


def freeze_all_but_image_encoder(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    model.requires_grad_(False)
    model.visual.requires_grad_(True)
    return list(model.visual.parameters())


def finetune(scorer: ClipScorer, train_pairs: list, val_pairs: list, out_dir: str, model_cfg: dict,
             settings: FinetuneSettings = FinetuneSettings(), runtime: Runtime | None = None,
             workers: int = 0, progress: bool = True, echo: Callable[[str], None] = print,
             keep: int = 0) -> str | None:
    """Adversarially fine-tune ``scorer.model``'s image encoder in place; returns the last checkpoint written."""
    s = settings
    rt = runtime or Runtime(scorer.device)
    require(s.batch_size >= 2, f"--batch-size must be at least 2 (the contrastive loss compares pairs), got "
                               f"{s.batch_size}.")
    require(s.accumulation >= 1 and s.steps >= 1 and s.save_every >= 1,
            "--steps, --accumulation and --save-every must be at least 1.")
    require(s.eps >= 0 and s.pgd_steps >= 0, "--eps and --pgd-steps must be 0 or more.")
    require(s.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got '{s.precision}'.")
    model = scorer.model.to(rt.device)
    parameters = freeze_all_but_image_encoder(model)
    tower = ImageTower(scorer, PRECISIONS[s.precision]).to(rt.device)
    trained = tower
    if rt.world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            tower, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(parameters, lr=s.lr, weight_decay=s.weight_decay)
    start = load_resume(out_dir, model.visual, optimizer, s, rt.world)
    if start and rt.main:
        echo(f"resuming from step {start} ({os.path.join(out_dir, RESUME_FILE)})")
    if start >= s.steps:
        return checkpoint_path(out_dir, start) if os.path.isfile(checkpoint_path(out_dir, start)) else None
    scale = model.logit_scale.exp().detach()

    def evaluate(step: int) -> None:
        if rt.main and val_pairs:
            tower.eval()
            clean = retrieval_top1(tower, scorer, val_pairs, s, rt.device, attack=False)
            robust = retrieval_top1(tower, scorer, val_pairs, s, rt.device, attack=True)
            echo(f"step {step}: held-out image→text top-1 {clean:.1%} clean, {robust:.1%} under PGD "
                 f"(ε={s.eps}, {s.pgd_steps} steps) on {len(val_pairs)} pairs")
        rt.barrier()

    def save(step: int) -> str:
        path = checkpoint_path(out_dir, step)
        if rt.main:
            save_clip(model, path, model_cfg)
            save_resume(out_dir, step, model.visual, optimizer, s, rt.world)
            prune_checkpoints(out_dir, keep)
            echo(f"step {step}: wrote {path}")
        rt.barrier()
        return path

    if start == 0:
        evaluate(0)
    sampler = ResumableBatches(len(train_pairs), s.batch_size, s.seed, rt.rank, rt.world, start * s.accumulation)
    loader = torch.utils.data.DataLoader(PairDataset(train_pairs, scorer.image_size[0]), batch_sampler=sampler,
                                         num_workers=workers, pin_memory=rt.device.type == "cuda")
    batches = iter(loader)
    bar = None
    if progress and rt.main:
        from tqdm import tqdm

        bar = tqdm(total=s.steps, initial=start, desc="CLIPAG fine-tuning", unit="step", dynamic_ncols=True)
    last = None
    try:
        for step in range(start + 1, s.steps + 1):
            total = 0.0
            for micro in range(s.accumulation):
                images, captions = next(batches)
                images = images.to(rt.device, non_blocking=True)
                text = scorer.encode_text(list(captions)).to(rt.device)
                tower.eval()
                adversarial = attack_batch(tower, images, text, scale, s)
                tower.train()
                sync = trained.no_sync() if rt.world > 1 and micro < s.accumulation - 1 else contextlib.nullcontext()
                with sync:
                    loss = contrastive_loss(trained(adversarial), text, scale) / s.accumulation
                    loss.backward()
                total += loss.item()
            if not math.isfinite(total):
                raise FuseDreamError(f"the adversarial loss became {total} at step {step}; lower --lr.")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if bar is not None:
                bar.set_postfix(adv_loss=f"{total:.4f}")
                bar.update(1)
            if step % s.save_every == 0 or step == s.steps:
                last = save(step)
                evaluate(step)
    finally:
        if bar is not None:
            bar.close()
    model.requires_grad_(False).eval()
    return last


# ---------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    d = FinetuneSettings()
    p = argparse.ArgumentParser(prog="python -m fusedream_ops.clipag_finetune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of images with same-stem .txt captions, or a CSV")
    p.add_argument("--checkpoint", required=True, help="open_clip checkpoint to start from (.safetensors/.pt/.bin)")
    p.add_argument("--arch", default=AUTO, help="open_clip architecture, e.g. ViT-B-32 or ViT-B-32-quickgelu "
                                               "(default auto: sidecar .json or shape detection)")
    p.add_argument("--out", required=True, help="folder for checkpoints and resume.pt (re-run to resume)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimizer updates (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"pairs per batch and GPU ({d.batch_size})")
    p.add_argument("--accumulation", type=int, default=d.accumulation, help=f"batches per update ({d.accumulation})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate ({d.lr})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"AdamW weight decay ({d.weight_decay})")
    p.add_argument("--eps", type=float, default=d.eps, help=f"L2 attack radius in [0,1] pixels ({d.eps})")
    p.add_argument("--pgd-steps", type=int, default=d.pgd_steps, help=f"attack steps ({d.pgd_steps})")
    p.add_argument("--pgd-step-size", type=float, default=None, help="attack step (default 2.5·eps/pgd-steps)")
    p.add_argument("--precision", choices=tuple(PRECISIONS), default=d.precision,
                   help="fp32, or bf16 autocast of the image encoder (weights stay fp32; default fp32)")
    p.add_argument("--save-every", type=int, default=d.save_every, help=f"checkpoint interval ({d.save_every})")
    p.add_argument("--keep", type=int, default=0, help="keep only the newest N step checkpoints (0 = all)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help=f"held-out share ({d.val_fraction})")
    p.add_argument("--val-max", type=int, default=d.val_max, help=f"held-out pairs at most ({d.val_max})")
    p.add_argument("--seed", type=int, default=d.seed, help="data order and split seed (0)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes per GPU (2)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu… (single process; default cuda if available)")
    p.add_argument("--csv-img-key", default="filepath", help="CSV column of image paths (filepath)")
    p.add_argument("--csv-caption-key", default="title", help="CSV column of captions (title)")
    p.add_argument("--csv-separator", default=",", help="CSV separator (,)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    settings = FinetuneSettings(
        steps=args.steps, batch_size=args.batch_size, accumulation=args.accumulation, lr=args.lr,
        weight_decay=args.weight_decay, eps=args.eps, pgd_steps=args.pgd_steps, pgd_step_size=args.pgd_step_size,
        save_every=args.save_every, precision=args.precision, val_fraction=args.val_fraction, val_max=args.val_max,
        seed=args.seed)
    runtime = None
    try:
        runtime = start_runtime(args.device)
        pairs = read_pairs(args.data, args.csv_img_key, args.csv_caption_key, args.csv_separator)
        train, val = split_pairs(pairs, settings.val_fraction, settings.val_max, settings.seed)
        scorer = load_clip(args.arch, args.checkpoint)
        cfg = model_config(args.arch, args.checkpoint, scorer)
        if runtime.main:
            print(f"{len(train)} training pairs, {len(val)} held out; architecture {scorer.name}; "
                  f"{runtime.world} process(es) on {runtime.device}")
        last = finetune(scorer, train, val, args.out, cfg, settings, runtime, args.workers, not args.no_progress,
                        keep=args.keep)
        if runtime.main and last:
            print(f"done: {last} (load it with the CLIP loader, architecture 'auto')")
    except FuseDreamError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    finally:
        if runtime is not None and runtime.world > 1:
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
