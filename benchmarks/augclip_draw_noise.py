"""The noise of one AugCLIP draw at a composition's fused image: where the ``eq5`` keep tolerance comes from.

    python benchmarks/augclip_draw_noise.py                       # tiny fixture models and the toy world
    python benchmarks/augclip_draw_noise.py --copies 16 --draws 64

For each model set, prompt and cell it prints the median (and range) over prompts × cells of
- the standard deviation of 64 AugCLIP draws (each of ``copies`` views) of one fixed fused image, and
- the step-to-step standard deviation of a 60-step composition run's AugCLIP history over steps 30–60, divided by
  √2 (what the keep rule actually sees: draw noise plus the drift of the iterate).
``DEFAULT_KEEP_TOLERANCE`` (fusedream_ops/composition/iterate_choice.py) is about twice the first number.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fusedream_ops.fusedream.augment import AugmentPolicy  # noqa: E402
from fusedream_ops.models.biggan import load_biggan  # noqa: E402
from fusedream_ops.models.clip import load_clip  # noqa: E402
from fusedream_ops.composition.bilevel import Cell, fuse_cells, optimize_composition  # noqa: E402
from fusedream_ops.fixtures import write_all  # noqa: E402
from fusedream_ops.fusedream.latents import sample_latents  # noqa: E402
from fusedream_ops.fusedream.objective import AugClipObjective  # noqa: E402
from fusedream_ops.models.lpips import load_lpips  # noqa: E402

CELLS = (Cell(0.65, "center"), Cell(0.5, "top-left"))


def measure(name, generator, clip, prompts, lpips, copies_list, draws):
    for copies in copies_list:
        stds, steps = [], []
        for i, prompt in enumerate(prompts):
            objective = AugClipObjective(clip, [(prompt, 1.0)], AugmentPolicy(), copies)
            fg, bg = sample_latents(generator, 5, 10 + i), sample_latents(generator, 5, 20 + i)
            with torch.no_grad():
                for cell in CELLS:
                    image = fuse_cells(generator.decode(fg.select(slice(0, 1))),
                                       generator.decode(bg.select(slice(0, 1))), [cell])
                    rng = torch.Generator().manual_seed(0)
                    stds.append(torch.stack([objective.score(image, rng, copies) for _ in range(draws)]).std().item())
            r = optimize_composition(generator, fg, bg, objective, lpips, [CELLS[0]], steps=60, lr=0.05,
                                     score_draws=1, blend_iterations=20)
            h = r.history["augclip"][30:, 0]
            steps.append(((h[1:] - h[:-1]).std() / 2 ** 0.5).item())
        print(f"{name}, {copies} copies: one draw sd {statistics.median(stds):.4f} ({min(stds):.4f}–{max(stds):.4f}); "
              f"step-to-step sd/√2 {statistics.median(steps):.4f} ({min(steps):.4f}–{max(steps):.4f})", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", default="8,16,50")
    parser.add_argument("--draws", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    copies = [int(c) for c in args.copies.split(",")]
    tiny = tempfile.mkdtemp()
    write_all(tiny)
    lpips = load_lpips("alex", os.path.join(tiny, "lpips", "alexnet-owt-7be5be79.pth"))
    measure("tiny fixture models", load_biggan(os.path.join(tiny, "biggan", "biggan-deep-256")),
            load_clip("auto", os.path.join(tiny, "open_clip", "ViT-B-32.safetensors")),
            ["an elephant on top of a roof", "a red car", "a photo of a dog"], lpips, copies, args.draws)
    world = os.path.join(ROOT, "tests", "fixtures", "toyworld")
    measure("toy world", load_biggan(os.path.join(world, "biggan", "toyworld_biggan")),
            load_clip("auto", os.path.join(world, "open_clip", "toyworld_clip.safetensors")),
            ["a red circle on the left and a blue square on the right",
             "a green cross at the top and a yellow triangle at the bottom", "a blue circle in the center"],
            lpips, copies, args.draws)


if __name__ == "__main__":
    main()
