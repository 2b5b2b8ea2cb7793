"""python -m fusedream_ops.clipag.finetune / fusedream-clipag-finetune: the fine-tuning command."""
from __future__ import annotations

import argparse

import torch

from ...core.command_exit import exit_code
from ...core.errors import FuseDreamError
from ...core.settings_options import add_settings_options
from ...models.clip import AUTO, load_clip
from .data import read_pairs, split_pairs
from .loop import check_finetune_run, finetune, model_config, start_runtime
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
    add_settings_options(p, d, {"steps": "optimizer updates (default %(default)s)",
                                "batch_size": "pairs per batch and GPU (%(default)s)",
                                "accumulation": "batches per update (%(default)s)",
                                "lr": "AdamW learning rate (%(default)s)",
                                "weight_decay": "AdamW weight decay (%(default)s)",
                                "eps": "L2 attack radius in [0,1] pixels (%(default)s)",
                                "pgd_steps": "attack steps (%(default)s)"})
    p.add_argument("--pgd-step-size", type=float, default=None, help="attack step (default 2.5·eps/pgd-steps)")
    p.add_argument("--precision", choices=tuple(PRECISIONS), default=d.precision,
                   help="fp32, or bf16 autocast of the image encoder (weights stay fp32; default fp32)")
    add_settings_options(p, d, {"save_every": "checkpoint interval (%(default)s)"})
    p.add_argument("--keep", type=int, default=0, help="keep only the newest N step checkpoints (0 = all)")
    add_settings_options(p, d, {"val_fraction": "held-out share (%(default)s)",
                                "val_max": "held-out pairs at most (%(default)s)",
                                "seed": "data order and split seed (%(default)s)"})
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
        check_finetune_run(settings, len(train), runtime.world)  # before the model loads
        scorer = load_clip(args.arch, args.checkpoint)
        cfg = model_config(args.arch, args.checkpoint, scorer)
        if runtime.main:
            print(f"{len(train)} training pairs, {len(val)} held out; architecture {scorer.name}; "
                  f"{runtime.world} process(es) on {runtime.device}")
        last = finetune(scorer, train, val, args.out, cfg, settings, runtime, args.workers, not args.no_progress,
                        keep=args.keep)
        if runtime.main and last:
            print(f"done: {last} (load it with the CLIP loader, architecture 'auto')")
    except (FuseDreamError, KeyboardInterrupt) as exc:
        return exit_code(exc, "interrupted: run the same command again to resume from the last checkpoint")
    finally:
        if runtime is not None and runtime.world > 1:
            torch.distributed.destroy_process_group()
    return 0
