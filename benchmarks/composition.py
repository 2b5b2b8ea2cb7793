"""FuseDream-Composition costs, side by side.

    python benchmarks/composition.py              # Poisson blending at 256 and 512 px, grid batching on tiny models
    python benchmarks/composition.py --real       # grid batching with BigGAN-deep-256 + ViT-B-32 (random weights)

Rows:
- Poisson: the pack's batched CG (4 images in one solve) vs one solve per image, and its error against an exact
  sparse direct solve (scipy) of the same system;
- grid search: seconds per cell-step with ``cells_per_batch`` = 1 vs 6 (cells optimised as one batch).
Ratios > 1 mean the pack's default/batched way is faster.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fusedream_ops.composition.geometry import foreground_layer, paste_mask  # noqa: E402
from fusedream_ops.composition.poisson import guidance_laplacian, neighbour_sum, poisson_blend  # noqa: E402


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def exact_blend(fg: torch.Tensor, bg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The same discrete system solved exactly with scipy's sparse LU (one image, float64)."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spl

    h, w = mask.shape[-2:]
    inside = mask[0, 0].numpy() > 0.5
    index = -np.ones((h, w), dtype=np.int64)
    index[inside] = np.arange(inside.sum())
    count = neighbour_sum(torch.ones(1, 1, h, w))[0, 0].numpy()
    rows, cols, vals = [], [], []
    ys, xs = np.nonzero(inside)
    for y, x in zip(ys, xs):
        i = index[y, x]
        rows.append(i), cols.append(i), vals.append(count[y, x])
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            qy, qx = y + dy, x + dx
            if 0 <= qy < h and 0 <= qx < w and inside[qy, qx]:
                rows.append(i), cols.append(index[qy, qx]), vals.append(-1.0)
    a = sp.csr_matrix((vals, (rows, cols)), shape=(len(ys), len(ys)))
    m = mask.double()
    b = (m * (neighbour_sum((1 - m) * bg.double()) + guidance_laplacian(fg.double())))[0]
    out = bg.double().clone()[0]
    lu = spl.splu(a.tocsc())
    for c in range(out.shape[0]):
        out[c][torch.from_numpy(inside)] = torch.from_numpy(lu.solve(b[c].numpy()[inside]))
    return out[None].float()


def poisson_rows(repeats: int):
    g = torch.Generator().manual_seed(0)
    for size in (256, 512):
        fg = torch.rand(4, 3, size, size, generator=g)
        bg = torch.rand(4, 3, size, size, generator=g)
        layer = foreground_layer(fg, size, size, 0.65, "center")
        mask = paste_mask(size, size, 0.65, "center")[:, 0]
        batched, out = timed(lambda: poisson_blend(layer, bg, mask), repeats)
        single, _ = timed(lambda: [poisson_blend(layer[i:i + 1], bg[i:i + 1], mask) for i in range(4)], repeats)
        exact = exact_blend(layer[:1], bg[:1], mask[None])
        error = (out[:1] - exact).abs().max().item()
        print(f"poisson {size}px x4  batched {batched:7.2f} s  one by one {single:7.2f} s  "
              f"ratio {single / batched:5.2f}  max |CG - exact| {error:.2e}")


def grid_rows(real: bool, steps: int):
    from fusedream_ops.models.biggan import BigGANGenerator, fold_spectral_norm
    from fusedream_ops.models.clip import ClipScorer
    from fusedream_ops.composition.bilevel import composition_grid_search, parse_grid
    from fusedream_ops.fixtures.biggan_clip import real_size_biggan, tiny_biggan, tiny_clip
    from fusedream_ops.fusedream.latents import sample_latents
    from fusedream_ops.fusedream.objective import AugClipObjective
    from fusedream_ops.models.lpips import load_lpips
    import open_clip

    if real:
        gan = real_size_biggan(settle_iterations=5)
        fold_spectral_norm(gan)
        clip = open_clip.create_model("ViT-B-32", pretrained=None)
    else:
        gan, clip = tiny_biggan(), tiny_clip()
    generator = BigGANGenerator(gan)
    objective = AugClipObjective(ClipScorer(clip, open_clip.get_tokenizer("ViT-B-32"), "clip"),
                                 [("an elephant on top of a roof", 1.0)], copies=8)
    lpips = load_lpips("alex", random_backbone=True)
    fg, bg = sample_latents(generator, 5, 1), sample_latents(generator, 5, 2)
    cells = parse_grid("0.65", "all")[:6]
    per_cell = {}
    for batch in (1, 6):
        start = time.perf_counter()
        composition_grid_search(generator, fg, bg, objective, lpips, cells, cells_per_batch=batch, steps=steps,
                                score_draws=1, blend_iterations=200)
        per_cell[batch] = (time.perf_counter() - start) / (len(cells) * steps)
    print(f"grid search ({'BigGAN-deep-256 + ViT-B-32' if real else 'tiny models'}), 6 cells x {steps} steps  "
          f"cells_per_batch=1 {per_cell[1]:.3f} s/cell-step  =6 {per_cell[6]:.3f} s/cell-step  "
          f"ratio {per_cell[1] / per_cell[6]:5.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true", help="real-size BigGAN-deep-256 and ViT-B-32")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    with torch.no_grad():
        poisson_rows(args.repeats)
    grid_rows(args.real, args.steps)


if __name__ == "__main__":
    main()
