"""Peak memory of the Reference Image Gaussian fit, measured side by side in fresh processes.

    python benchmarks/gaussian_fit_memory.py                    # 20 classes × 50 images at 32 px
    python benchmarks/gaussian_fit_memory.py --classes 200 --size 16

Rows: the pack's fit (each class fitted in turn into preallocated float32 storage) and the all-at-once fit it
replaced (every class's float64 factor kept in a list, then stacked). Each row is the peak RSS growth during the fit
over the model's own size (1.0 = no overhead); the ratio is machine-independent, the MiB are this run's.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(kind: str, classes: int, images: int, size: int) -> None:
    sys.path.insert(0, ROOT)
    import torch

    from fusedream_ops.clipag.init_images import SmallImageGaussians, square_resize

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    groups = [torch.rand(images, 3, size, size, generator=g) for _ in range(classes)]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if kind == "pack":
        model = SmallImageGaussians.fit(groups, size)
        factors = model.cholesky
    else:
        dim, listed = 3 * size * size, []
        for group in groups:
            x = square_resize(group, size).flatten(1).double() * 2 - 1
            centred = x - x.mean(dim=0)
            cov = centred.t() @ centred / (x.shape[0] - 1) + 1e-4 * torch.eye(dim, dtype=torch.float64)
            listed.append(torch.linalg.cholesky(cov))
        factors = torch.stack(listed).float()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{(peak - base) / 1024:.0f} {factors.numel() * 4 / 2**20:.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--row", choices=("pack", "all-at-once"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.row:
        return measure(args.row, args.classes, args.images, args.size)
    print(f"{args.classes} classes × {args.images} images at {args.size} px (peak RSS growth / model size)")
    for row in ("pack", "all-at-once"):
        out = subprocess.run([sys.executable, __file__, "--row", row, "--classes", str(args.classes), "--images",
                              str(args.images), "--size", str(args.size)], capture_output=True, text=True, check=True)
        peak, model = (float(v) for v in out.stdout.split())
        print(f"  {row:12s} +{peak:6.0f} MiB for a {model:.0f} MiB model: ×{peak / model:.2f}")


if __name__ == "__main__":
    main()
