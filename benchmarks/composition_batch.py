"""Composition: time per image vs independent problems (seeds) per step, side by side in one run.

    python benchmarks/composition_batch.py                 # tiny fixture models, 1 thread
    python benchmarks/composition_batch.py --real          # BigGAN-deep-256 + ViT-B-32 (random weights)

For P problems per step (P seeds of one prompt, one cell each, all in one generator/CLIP/LPIPS batch and one
backward) it prints the seconds per image-step (one problem, one step) and the ratio to P = 1 (> 1: batching
saves time). Sizes are interleaved and repeated; medians are reported. The machine's load (``uptime``) is printed
with the table: compare the ratios, not the absolute times.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def models(real: bool):
    import open_clip

    from fusedream_ops.models.biggan import BigGANGenerator
    from fusedream_ops.models.clip import ClipScorer
    from fusedream_ops.fixtures.biggan_clip import tiny_biggan, tiny_clip

    if real:
        from fusedream_ops.models.biggan import fold_spectral_norm
        from fusedream_ops.fixtures.biggan_clip import real_size_biggan

        gan = real_size_biggan(settle_iterations=5)  # as benchmarks/composition.py --real
        fold_spectral_norm(gan)
        clip = open_clip.create_model("ViT-B-32", pretrained=None)
    else:
        gan, clip = tiny_biggan(), tiny_clip()
    return BigGANGenerator(gan), ClipScorer(clip, open_clip.get_tokenizer("ViT-B-32"), "clip")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true", help="real-size BigGAN-deep-256 and ViT-B-32")
    parser.add_argument("--problems", default="1,2,4,8", help="problems per step to compare")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from fusedream_ops.composition.bilevel import Cell, CompositionProblem, optimize_compositions
    from fusedream_ops.fusedream.latents import sample_latents
    from fusedream_ops.fusedream.objective import AugClipObjective
    from fusedream_ops.models.lpips import load_lpips

    generator, scorer = models(args.real)
    objective = AugClipObjective(scorer, [("an elephant on top of a roof", 1.0)], copies=args.copies)
    lpips = load_lpips("alex", random_backbone=True)
    fg, bg = sample_latents(generator, 5, 1), sample_latents(generator, 5, 2)
    sizes = [int(p) for p in args.problems.split(",")]
    times = {p: [] for p in sizes}

    def run(p):
        problems = [CompositionProblem(fg, bg, objective, seed) for seed in range(p)]
        start = time.perf_counter()
        optimize_compositions(generator, problems, lpips, [Cell(0.65, "center")], steps=args.steps, score_draws=1,
                              blend_iterations=50)
        return (time.perf_counter() - start) / (p * args.steps)

    run(1)  # warm-up
    for _ in range(args.repeats):
        for p in sizes:
            times[p].append(run(p))
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    name = "BigGAN-deep-256 + ViT-B-32 (random weights)" if args.real else "tiny fixture models"
    print(f"{name}, {args.threads} thread(s), {args.steps} steps, {args.copies} copies, medians of "
          f"{args.repeats}; load: {load}")
    print("| problems per step | s per image-step | vs 1 problem per step |")
    print("|---|---|---|")
    base = statistics.median(times[sizes[0]])
    for p in sizes:
        t = statistics.median(times[p])
        print(f"| {p} | {t:.4f} | {base / t:.2f}× |")


if __name__ == "__main__":
    main()
