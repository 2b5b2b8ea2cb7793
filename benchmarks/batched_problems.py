"""Images per hour of the basis optimizer against the number of independent problems optimised per step.

    python benchmarks/batched_problems.py                 # real sizes: BigGAN-deep-256 + ViT-B-32 (random weights)
    python benchmarks/batched_problems.py --tiny          # the tiny fixture models
    python benchmarks/batched_problems.py --device cuda --batches 1 2 4 8 16

Each row runs ``optimize_bases`` on ``B`` problems (one prompt, seeds 0..B-1) for ``--steps`` steps, the batch sizes
interleaved over ``--repeats`` rounds; images per hour = B · 3600 / (1000 steps × the median step time), 1000 steps
being the official setting. A batch fills a GPU that one 50-copy problem leaves idle; on a CPU that is already busy
with one problem the gain is small.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fusedream_ops.fusedream.latents import sample_latents  # noqa: E402
from fusedream_ops.fusedream.objective import AugClipObjective  # noqa: E402
from fusedream_ops.fusedream.optimize import Problem, optimize_bases  # noqa: E402
from fusedream_ops.core.precision import cast_frozen  # noqa: E402

STEPS_PER_IMAGE = 1000


def step_times(generator, objective, batch: int, steps: int, copies: int) -> list[float]:
    problems = [Problem(sample_latents(generator, 5, seed=i), objective, seed=i) for i in range(batch)]
    times, last = [], [time.perf_counter()]

    def tick(_step):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    optimize_bases(generator, problems, steps, copies=copies, on_step=tick)
    return times[1:] if len(times) > 1 else times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", help="auto / fp32 / fp16 / bf16 for both models")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--copies", type=int, default=50)
    args = parser.parse_args()
    device = torch.device(args.device)
    from augclip_step import models

    generator, scorer = models(args.tiny)
    cast_frozen(generator.model, args.precision, "vae", device).to(device)
    cast_frozen(scorer.model, args.precision, "text_encoder", device).to(device)
    objective = AugClipObjective(scorer, [("a photo of a blue dog", 1.0)], copies=args.copies)
    print(f"# load {os.getloadavg()}, {torch.get_num_threads()} threads, device {device}, generator "
          f"{generator.dtype}, CLIP {scorer.dtype}, {args.copies} copies", flush=True)
    step_times(generator, objective, 1, 1, args.copies)  # warm-up
    times = {b: [] for b in args.batches}
    for _ in range(args.repeats):
        for b in args.batches:
            times[b] += step_times(generator, objective, b, args.steps, args.copies)
    base = statistics.median(times[args.batches[0]]) / args.batches[0]
    print("| problems per step | step (s) | images per hour (1000 steps) | per image vs the first row |")
    print("|---|---|---|---|")
    for b in args.batches:
        step = statistics.median(times[b])
        print(f"| {b} | {step:.3f} | {b * 3600 / (STEPS_PER_IMAGE * step):.2f} | {step / b / base:.2f}× |")
    print(f"# load at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
