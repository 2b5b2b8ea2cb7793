"""The fine-tuning loop: AdamW on the image tower against PGD images, checkpoints, resume, held-out retrieval."""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ...core.checkpoints import atomic_write, check_state_dict
from ...core.errors import FuseDreamError, require
from ...models.clip import AUTO, ClipScorer, read_sidecar, save_clip
from .attack import ImageTower, attack_batch, contrastive_loss, pgd_l2
from .data import PairDataset, ResumableBatches
from .settings import PRECISIONS, FinetuneSettings

RESUME_FILE = "resume.pt"


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


def check_finetune_run(s: FinetuneSettings, train_count: int, world: int = 1) -> None:
    """Refuse settings and a training set that cannot run, before the model loads or the held-out set is scored."""
    require(s.batch_size >= 2, f"--batch-size must be at least 2 (the contrastive loss compares pairs), got "
                               f"{s.batch_size}.")
    require(s.accumulation >= 1 and s.steps >= 1 and s.save_every >= 1,
            "--steps, --accumulation and --save-every must be at least 1.")
    require(s.eps >= 0 and s.pgd_steps >= 0, "--eps and --pgd-steps must be 0 or more.")
    require(s.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got '{s.precision}'.")
    require(train_count >= s.batch_size * world,
            f"{train_count} training pairs are fewer than one batch of {s.batch_size} per process × {world} "
            f"process(es); lower --batch-size or add data.")


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
    check_finetune_run(s, len(train_pairs), rt.world)
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
