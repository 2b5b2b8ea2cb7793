"""python -m fusedream_ops.clipag.finetune / fusedream-clipag-finetune: the fine-tuning command."""
from __future__ import annotations

import argparse
import sys

import torch

from ...core.errors import FuseDreamError
from ...models.clip import AUTO, load_clip
from .data import read_pairs, split_pairs
from .loop import finetune, model_config, start_runtime
from .settings import PRECISIONS, FinetuneSettings


def _parser() -> argparse.ArgumentParser:
    d = FinetuneSettings()
    p = argparse.ArgumentParser(prog="python -m fusedream_ops.clipag.finetune", description=__doc__,
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
