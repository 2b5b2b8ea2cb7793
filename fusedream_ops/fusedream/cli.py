"""FuseDream text-to-image from the command line: ``python -m fusedream_ops`` / ``fusedream`` (Alg. 1 end to end)."""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from PIL.PngImagePlugin import PngInfo

from ..core.checkpoints import atomic_write
from ..core.command_exit import exit_code
from ..core.errors import FuseDreamError, require
from ..core.images import to_pil
from ..core.progress import Step
from ..core.settings_options import add_settings_options
from ..models.biggan import load_biggan
from ..models.clip import AUTO, load_clip
from ..validation import ranges
from ..validation.numbers import require_number
from ..validation.prompts import parse_prompts, truncation_warnings
from .pipeline import FuseDreamSettings, generate


def _parser() -> argparse.ArgumentParser:
    d = FuseDreamSettings()
    p = argparse.ArgumentParser(prog="python -m fusedream_ops", description=__doc__)
    p.add_argument("prompt", help="the text; several prompts separated by '|', each optionally ending in ':weight', "
                                  "a number from -100 to 100 (negative = avoid). A colon followed by words is text; "
                                  "write 'time 10:30 :1' when the text itself ends in ':number'.")
    p.add_argument("-o", "--output", default="fusedream.png", help="PNG to write (default: fusedream.png)")
    p.add_argument("--models", default=os.environ.get("FUSEDREAM_MODELS", "models"),
                   help="models folder holding biggan/ and open_clip/ (default: $FUSEDREAM_MODELS or ./models)")
    p.add_argument("--biggan", default="biggan-deep-256", help="checkpoint in <models>/biggan (or a path)")
    p.add_argument("--clip", default="ViT-B-32.safetensors", help="checkpoint in <models>/open_clip (or a path)")
    p.add_argument("--arch", default=AUTO, help="open_clip architecture (default: auto)")
    add_settings_options(p, d, {"candidates": "M random latents (default %(default)s)",
                                "k": "basis size (default %(default)s)",
                                "steps": "Adam steps (default %(default)s)",
                                "lr": "learning rate (default %(default)s)",
                                "copies": "AugCLIP copies (default %(default)s)"})
    p.add_argument("--mode", choices=("paper", "official"), default=d.mode, help="basis weights (default paper)")
    add_settings_options(p, d, {"seed": "random seed (default %(default)s)"})
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    return p


_OPTIONS = {**{n: ranges.FUSEDREAM[n] for n in ("candidates", "k", "steps", "lr", "copies")}, "seed": ranges.SEED}
RANGES = {name: (r.low, r.high) for name, r in _OPTIONS.items()}
"""The valid values of the numeric options: the nodes' widget ranges (:mod:`~fusedream_ops.validation.ranges`)."""


def _check_arguments(args) -> list[tuple[str, float]]:
    """Everything the command line can get wrong, checked before any model is loaded; returns the prompts."""
    for name, (low, high) in RANGES.items():
        require_number(f"--{name}", getattr(args, name), low, high, integer=name != "lr")
    require(args.k <= args.candidates, f"--k ({args.k}) must be at most --candidates ({args.candidates}).")
    prompts = parse_prompts("\n".join(p.strip() for p in args.prompt.split("|")))
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise FuseDreamError(f"--device '{args.device}' is not a torch device: use cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        require(torch.cuda.is_available(), f"--device {args.device}: torch sees no CUDA GPU here; use --device cpu.")
        require(device.index is None or device.index < torch.cuda.device_count(),
                f"--device {args.device}: there are only {torch.cuda.device_count()} CUDA GPU(s).")
    elif device.type == "mps":
        require(torch.backends.mps.is_available(), f"--device {args.device}: MPS is not available; use --device cpu.")
    output = os.path.abspath(args.output)
    require(not os.path.isdir(output), f"-o {args.output} is an existing folder; give a file name such as "
                                       f"{os.path.join(args.output, 'fusedream.png')}.")
    require(os.path.isdir(os.path.dirname(output)),
            f"-o {args.output}: the folder {os.path.dirname(output)} does not exist; create it first.")
    return prompts


def _resolve(models: str, folder: str, name: str, option: str) -> str:
    """``name`` as a path, else ``<models>/<folder>/<name>``; a missing file says where models go."""
    if os.path.exists(name):
        return name
    path = os.path.join(models, folder, name)
    require(os.path.exists(path),
            f"{option} '{name}' was not found (looked for {path}). Put the weights there (README: 'Which weight file "
            f"goes where'), point --models at the folder that holds {folder}/, or give {option} a path.")
    return path


def _printer(label: str, unit: int = 1, count: int | None = None, noun: str = ""):
    """Progress lines about every 5 %; ``unit`` items per step (Top-k reports chunks of ``unit`` candidates)."""
    start = time.monotonic()

    def on_step(step: Step) -> None:
        if step.step == step.total or step.step % max(1, step.total // 20) == 0:
            done = step.step if count is None else min(step.step * unit, count)
            total = step.total if count is None else count
            values = " ".join(f"{k} {v:.4f}" for k, v in step.values.items())
            print(f"{label} {done}/{total}{noun} {values} ({time.monotonic() - start:.0f}s)", flush=True)

    return on_step


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    settings = FuseDreamSettings(candidates=args.candidates, k=args.k, steps=args.steps, lr=args.lr,
                                 copies=args.copies, mode=args.mode, seed=args.seed)
    try:
        prompts = _check_arguments(args)
        generator = load_biggan(_resolve(args.models, "biggan", args.biggan, "--biggan"))
        scorer = load_clip(args.arch, _resolve(args.models, "open_clip", args.clip, "--clip"))
        for warning in truncation_warnings([t for t, _ in prompts], scorer.tokenizer):
            print(warning, file=sys.stderr)
        generator.model.to(args.device)
        scorer.model.to(args.device)
        prompt = "\n".join(p.strip() for p in args.prompt.split("|"))
        result = generate(generator, scorer, prompt, settings,
                          on_init_step=_printer("top-k", settings.chunk, args.candidates, " candidates"),
                          on_step=_printer("optimize"))
        info = PngInfo()
        info.add_text("prompt", args.prompt)
        info.add_text("fusedream", f"seed={args.seed} augclip={result.best_score:.4f} step={result.best_step}")
        atomic_write(args.output, lambda p: to_pil(result.image).save(p, format="PNG", pnginfo=info))
    except (FuseDreamError, KeyboardInterrupt) as exc:
        return exit_code(exc, "[FuseDream] interrupted; nothing was written.")
    except OSError as exc:
        print(f"[FuseDream] could not write {args.output}: {exc.strerror or exc}.", file=sys.stderr)
        return 2
    print(f"wrote {args.output} (AugCLIP {result.best_score:.4f} at step {result.best_step})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
