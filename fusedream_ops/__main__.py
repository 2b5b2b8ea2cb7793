"""python -m fusedream_ops "a photo of a blue dog" -o out.png — FuseDream text-to-image from the command line."""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from PIL.PngImagePlugin import PngInfo

from .biggan import load_biggan
from .checkpoints import atomic_write
from .clip_scorer import AUTO, load_clip
from .errors import FuseDreamError
from .images import to_pil
from .pipeline import FuseDreamSettings, generate
from .progress import Step


def _parser() -> argparse.ArgumentParser:
    d = FuseDreamSettings()
    p = argparse.ArgumentParser(prog="python -m fusedream_ops", description=__doc__)
    p.add_argument("prompt", help="the text; several prompts separated by '|', each optionally 'text:weight'")
    p.add_argument("-o", "--output", default="fusedream.png", help="PNG to write (default: fusedream.png)")
    p.add_argument("--models", default=os.environ.get("FUSEDREAM_MODELS", "models"),
                   help="models folder holding biggan/ and open_clip/ (default: $FUSEDREAM_MODELS or ./models)")
    p.add_argument("--biggan", default="biggan-deep-256", help="checkpoint in <models>/biggan (or a path)")
    p.add_argument("--clip", default="ViT-B-32.safetensors", help="checkpoint in <models>/open_clip (or a path)")
    p.add_argument("--arch", default=AUTO, help="open_clip architecture (default: auto)")
    p.add_argument("--candidates", type=int, default=d.candidates, help=f"M random latents (default {d.candidates})")
    p.add_argument("--k", type=int, default=d.k, help=f"basis size (default {d.k})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"Adam steps (default {d.steps})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr})")
    p.add_argument("--copies", type=int, default=d.copies, help=f"AugCLIP copies (default {d.copies})")
    p.add_argument("--mode", choices=("paper", "official"), default=d.mode, help="basis weights (default paper)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default 0)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    return p


def _resolve(models: str, folder: str, name: str) -> str:
    return name if os.path.exists(name) else os.path.join(models, folder, name)


def _printer(label: str):
    start = time.monotonic()

    def on_step(step: Step) -> None:
        if step.step == step.total or step.step % max(1, step.total // 20) == 0:
            values = " ".join(f"{k} {v:.4f}" for k, v in step.values.items())
            print(f"{label} {step.step}/{step.total} {values} ({time.monotonic() - start:.0f}s)", flush=True)

    return on_step


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    settings = FuseDreamSettings(candidates=args.candidates, k=args.k, steps=args.steps, lr=args.lr,
                                 copies=args.copies, mode=args.mode, seed=args.seed)
    try:
        generator = load_biggan(_resolve(args.models, "biggan", args.biggan))
        scorer = load_clip(args.arch, _resolve(args.models, "open_clip", args.clip))
        generator.model.to(args.device)
        scorer.model.to(args.device)
        prompt = "\n".join(p.strip() for p in args.prompt.split("|"))
        result = generate(generator, scorer, prompt, settings,
                          on_init_step=_printer("top-k"), on_step=_printer("optimize"))
    except FuseDreamError as exc:
        print(exc, file=sys.stderr)
        return 2
    info = PngInfo()
    info.add_text("prompt", args.prompt)
    info.add_text("fusedream", f"seed={args.seed} augclip={result.best_score:.4f} step={result.best_step}")
    atomic_write(args.output, lambda p: to_pil(result.image).save(p, format="PNG", pnginfo=info))
    print(f"wrote {args.output} (AugCLIP {result.best_score:.4f} at step {result.best_step})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
