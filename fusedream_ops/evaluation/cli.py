"""python -m fusedream_ops.evaluation RUN [RUN ...] — IS, FID and CLIP R-precision of batch runs (FuseDream Table 1).

Each RUN is a batch output folder (or its manifest.jsonl); one row per run. Prints a Markdown table and writes
the numbers as JSON (--json). Nothing is downloaded: the Inception weights and the evaluation CLIP are files.
"""
from __future__ import annotations

import argparse
import json

from ..core.checkpoints import atomic_write_text
from ..core.command_exit import exit_code
from ..core.errors import FuseDreamError
from ..core.settings_options import add_settings_options
from .features import INCEPTION_FILE, NETWORKS
from .report import EvaluationSettings, evaluate_runs, format_table


def _parser() -> argparse.ArgumentParser:
    d = EvaluationSettings()
    p = argparse.ArgumentParser(prog="python -m fusedream_ops.evaluation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="batch run folders (or their manifest.jsonl)")
    p.add_argument("--features", choices=NETWORKS, default=d.network,
                   help="IS/FID feature network: inception (real images) or toyworld (the toy world's judge)")
    p.add_argument("--inception", default=None, help=f"Inception weights file ({INCEPTION_FILE})")
    p.add_argument("--judge", default=None, help="toy-world judge file (with --features toyworld)")
    p.add_argument("--reference", default=None, help="folder of real images for FID (statistics are cached)")
    p.add_argument("--cache-dir", default=None, help="where reference statistics are cached "
                                                     "(default ~/.cache/fusedream/reference-stats)")
    p.add_argument("--eval-clip", default=None,
                   help="open_clip checkpoint that grades CLIP R-precision (use one the images were NOT guided by)")
    p.add_argument("--eval-clip-arch", default="auto", help="its architecture (default auto)")
    p.add_argument("--distractors", default=None,
                   help="prompt file whose captions are the CLIP R-precision distractor pool (default: the runs' own)")
    add_settings_options(p, d, {"candidates": "CLIP R-precision candidates: 1 true + N-1",
                                "repeats": "CLIP R-precision repeats (mean ± std)",
                                "splits": "IS splits",
                                "seed": "seed of the IS shuffle and CLIP R-precision draws",
                                "batch_size": "images per device batch"})
    p.add_argument("--device", default=None, help="torch device (default cuda if available)")
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS", help="extract features on Ray actors")
    p.add_argument("--workers", type=int, default=None, help="Ray actors (default: one per GPU, else per CPU)")
    p.add_argument("--json", default=None, help="write the results here as JSON")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    path = args.inception if args.features == "inception" else args.judge
    try:
        if path is None:
            raise FuseDreamError(f"--features {args.features} needs "
                                 + (f"--inception PATH/{INCEPTION_FILE}" if args.features == "inception"
                                    else "--judge PATH/judge.safetensors") + ".")
        settings = EvaluationSettings(args.features, path, args.reference, args.eval_clip, args.eval_clip_arch,
                                      args.distractors, args.candidates, args.repeats, args.splits, args.seed,
                                      args.batch_size, args.device, args.ray, args.workers, args.cache_dir)
        result = evaluate_runs(args.runs, settings)
    except FuseDreamError as exc:
        return exit_code(exc)
    print(format_table(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
