"""python -m fusedream_ops.batch PROMPTS OUT --method fusedream — many prompts, one PNG each, a manifest.

Models are found like ``python -m fusedream_ops``: names inside --models (biggan/, open_clip/, kandinsky22/) or
paths. Rerun the same command to resume. --ray auto|ADDRESS runs the same work on a Ray cluster.
"""
from __future__ import annotations

import argparse
import os

from ..core.command_exit import exit_code
from ..core.errors import FuseDreamError
from .methods import METHODS, MethodSpec
from .run import run_batch


def number(text: str) -> int | float:
    """An int when the text is one (seeds keep all 64 bits), else a float (``1e9``, ``nan``): whether it is a valid
    value is decided by the ranges (:func:`fusedream_ops.batch.methods.check_spec`), with a message naming them."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None


SETTINGS = {
    "candidates": number, "k": number, "steps": number, "lr": number, "copies": number, "mode": str,
    "chunk": number, "latent_noise": number, "views": number, "patches": number, "size": number,
    "num_tokens": number, "decoder_steps": number, "guidance": number, "width": number, "height": number,
}
"""Method settings the command line sets (each only when given; see ``fusedream_ops.batch.methods``)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fusedream_ops.batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompts", help="prompt file: .txt (one per line), .jsonl or .csv (id, prompt, optional seed)")
    p.add_argument("out", help="output folder (images/, records/, manifest.jsonl); rerun to resume")
    p.add_argument("--method", choices=METHODS, default="fusedream", help="what makes the images (default fusedream)")
    p.add_argument("--models", default=os.environ.get("FUSEDREAM_MODELS", "models"),
                   help="models folder (default: $FUSEDREAM_MODELS or ./models)")
    p.add_argument("--biggan", default="biggan-deep-256", help="checkpoint in <models>/biggan (or a path)")
    p.add_argument("--clip", default="ViT-B-32.safetensors", help="checkpoint in <models>/open_clip (or a path)")
    p.add_argument("--arch", default="auto", help="open_clip architecture (default auto)")
    p.add_argument("--prior", default="kandinsky-2-2-prior", help="folder in <models>/kandinsky22 (or a path)")
    p.add_argument("--decoder", default="kandinsky-2-2-decoder", help="folder in <models>/kandinsky22 (or a path)")
    for name, kind in SETTINGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None,
                       help=f"method setting '{name}' (default: the method's own)")
    p.add_argument("--seed", type=number, default=0, help="run seed: image seeds derive from (seed, prompt id)")
    p.add_argument("--images-per-prompt", type=number, default=1, help="images (seeds) per prompt (default 1)")
    p.add_argument("--attempts", type=number, default=3, help="tries per image before it stays failed (default 3)")
    p.add_argument("--device", default=None, help="torch device (default cuda if available); on Ray: cpu or cuda "
                                                  "workers (default cuda if the cluster has GPUs)")
    p.add_argument("--threads", type=number, default=None, help="embedded run: torch CPU threads")
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help="run on Ray: 'auto' (this machine's cluster, or a new local one) or a cluster address")
    p.add_argument("--workers", type=number, default=None, help="Ray workers (default: one per GPU, else per CPU)")
    p.add_argument("--cpus-per-worker", type=number, default=1, help="CPUs (= torch threads) of a CPU Ray worker")
    p.add_argument("--ship-code", action="store_true",
                   help="send this fusedream_ops to the Ray workers (runtime_env py_modules) instead of using "
                        "the package installed on each node")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _resolve(models: str, folder: str, name: str) -> str:
    return name if os.path.exists(name) else os.path.join(models, folder, name)


def spec_from_args(args) -> MethodSpec:
    settings = {name: getattr(args, name) for name in SETTINGS if getattr(args, name) is not None}
    if args.method in ("ovi", "textemb"):
        models = {"prior": _resolve(args.models, "kandinsky22", args.prior),
                  "decoder": _resolve(args.models, "kandinsky22", args.decoder)}
    else:
        models = {"clip": os.path.abspath(_resolve(args.models, "open_clip", args.clip)), "arch": args.arch}
        if args.method != "clipag-pixels":
            models["biggan"] = _resolve(args.models, "biggan", args.biggan)
    return MethodSpec(args.method, settings, {k: (os.path.abspath(v) if k != "arch" else v)
                                              for k, v in models.items()})


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        summary = run_batch(args.prompts, args.out, spec_from_args(args), run_seed=args.seed,
                            images_per_prompt=args.images_per_prompt, ray=args.ray, workers=args.workers,
                            cpus_per_worker=args.cpus_per_worker, ship_code=args.ship_code, device=args.device,
                            threads=args.threads, attempts=args.attempts, progress=not args.no_progress)
    except FuseDreamError as exc:
        return exit_code(exc)
    print(f"{summary.ok}/{summary.total} images ok, {summary.failed} failed, {summary.made_now} made now "
          f"({summary.where}, {summary.seconds:.0f} s); manifest: {summary.manifest}")
    return 0 if summary.failed == 0 else 1
