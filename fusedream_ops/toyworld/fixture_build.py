"""How every toy-world fixture build runs: the models trained one stage at a time (a written model is kept, so a
build resumes), on one CPU thread, then sanity numbers measured on what was written, all timed in a JSON report
beside the models; and the command line ``python -m <module> OUT_DIR [--smoke]`` that starts it."""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Callable

import torch

from ..core.checkpoints import atomic_write_text


def run_stages(stages, log=print) -> dict[str, float]:
    """Run each ``(name, path, run)`` stage whose file ``path`` does not exist yet; the seconds each one took.
    A written model is kept, so a build can be resumed and one model retrained by deleting its file."""
    seconds = {}
    for name, path, run in stages:
        if os.path.isfile(path):
            log(f"{name}: keeping {path} (delete it to retrain)")
            continue
        start = time.time()
        run()
        seconds[name] = round(time.time() - start, 1)
    return seconds


def run_build(out_dir: str, report_path: str, smoke: bool, steps: dict, train: Callable[[], dict[str, float]],
              evaluate: Callable[[], dict]) -> dict:
    """``train()`` (the seconds each part took) then ``evaluate()`` (the sanity numbers), on one CPU thread (the
    same command writes the same bytes); the report (smoke, steps, seconds, the numbers) is written to
    ``out_dir/report_path`` and returned. The caller's thread count is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    report = {"smoke": smoke, "steps": steps, "seconds": {}}
    try:
        report["seconds"].update(train())
        start = time.time()
        report.update(evaluate())
        report["seconds"]["evaluation"] = round(time.time() - start, 1)
        report["seconds"]["total"] = round(sum(report["seconds"].values()), 1)
        atomic_write_text(os.path.join(out_dir, report_path), json.dumps(report, indent=2) + "\n")
    finally:
        torch.set_num_threads(threads)
    return report


def build_command(argv, module: str, doc: str, build_fn, out_help: str) -> int:
    """The command line every toy-world build shares: ``python -m <module> OUT_DIR [--smoke]``, report printed."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    parser.add_argument("out_dir", help=out_help)
    parser.add_argument("--smoke", action="store_true", help="a few training steps of each model (for CI)")
    args = parser.parse_args(argv)
    report = build_fn(args.out_dir, smoke=args.smoke, log=lambda s: print(s, flush=True))
    print(json.dumps(report, indent=2))
    return 0
