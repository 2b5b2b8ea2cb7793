"""Where one optimisation step's time goes: torch.profiler over one fp32 step at real sizes (random weights).

    python benchmarks/profile_step.py [--copies 50] [--precision fp32] [--top 30]

The step is ``optimize_basis``'s body (latent noise, BigGAN-deep-256, DiffAugment, ViT-B-32-quickgelu, Adam) on the
pack's own models as ``benchmarks/vs_official.py`` builds them. Prints the time of each phase and the operators by
self time with their share of the step; shares are robust to a shared machine's load, absolute times are not. The
2048² fp32 matmul rate is measured before and after, in the same process.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vs_official import Pack, matmul_rate  # noqa: E402

from fusedream_ops.fusedream.basis import LatentBasis  # noqa: E402

USEFUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::mkldnn_convolution", "aten::convolution_backward",
          "aten::_scaled_dot_product_flash_attention_for_cpu",
          "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    pack = Pack(torch.device("cpu"), args.precision)
    rng = torch.Generator().manual_seed(0)
    basis = LatentBasis(pack.basis, "paper", True, rng)
    optimizer = torch.optim.Adam([p for p in basis.parameters() if p.requires_grad], lr=5e-3)
    scorer = pack.objective.scorer

    def step():
        with record_function("phase: latents"):
            z, y = basis()
            z = z + 0.01 * torch.randn(z.shape, generator=rng)
            y = y + 0.01 * torch.randn(y.shape, generator=rng)
        with record_function("phase: generator forward"):
            images = pack.generator(z, y, pack.basis.truncation)
        with record_function("phase: augmentation forward"):
            views, _ = pack.objective.views(images, rng, args.copies)
            views = scorer.prepare(views)
        with record_function("phase: CLIP forward"):
            score = pack.objective.similarity(
                torch.nn.functional.normalize(scorer.model.encode_image(views).float(), dim=-1)).mean()
        optimizer.zero_grad(set_to_none=True)
        with record_function("phase: backward"):
            (-score).backward()
        optimizer.step()

    step()
    before = matmul_rate(torch.device("cpu"), torch.float32)
    start = time.perf_counter()
    step()
    untraced = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    after = matmul_rate(torch.device("cpu"), torch.float32)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"# {args.precision}, {args.copies} copies, {torch.get_num_threads()} threads; step {untraced:.2f} s "
          f"untraced, {total / 1e6:.2f} s traced; 2048² fp32 matmul {before:.0f} → {after:.0f} GFLOP/s; "
          f"load {os.getloadavg()}")
    for e in sorted(events, key=lambda e: -e.cpu_time_total):
        if e.key.startswith("phase: "):
            print(f"{e.key[7:]:24s} {e.cpu_time_total / 1e6:7.2f} s  {100 * e.cpu_time_total / total:5.1f} %")
    useful = sum(e.self_cpu_time_total for e in events if e.key in USEFUL)
    print(f"matmul/convolution/attention kernels: {100 * useful / total:.1f} % of the step\n")
    print("| operator | calls | self time (s) | share |\n|---|---|---|---|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]:
        if not e.key.startswith("phase: "):
            print(f"| {e.key} | {e.count} | {e.self_cpu_time_total / 1e6:.3f} | "
                  f"{100 * e.self_cpu_time_total / total:.1f} % |")


if __name__ == "__main__":
    main()
