"""BigGAN-deep-256 in bf16 against fp32, side by side in one process (random weights at real size).

    python benchmarks/generator_precision.py [--repeats 3] [--chunk 10]

Times the optimisation step's generator work (forward + backward of one image to its latents) and top-k's
(no-grad forward of ``--chunk`` candidates) with fp32 weights and with bf16 weights, interleaved, and prints
medians and the bf16 / fp32 ratios. The pack's generator computes its batch norms (fused with their ReLU) in fp32
and its convolutions in the weights' dtype (see ``fusedream_ops/models/fast_layers.py``); ``library`` is the same model
through pytorch-pretrained-biggan's own modules (only the 3-channel output convolution swapped in), everything in
the weights' dtype.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fusedream_ops.models.biggan import BigGANGenerator, fold_spectral_norm  # noqa: E402
from fusedream_ops.models.fast_layers import use_rgb_only_output  # noqa: E402
from fusedream_ops.fusedream.latents import sample_latents  # noqa: E402
from fusedream_ops.core.precision import cast_frozen  # noqa: E402


def build() -> torch.nn.Module:
    from fusedream_ops.fixtures.biggan_clip import real_size_biggan

    gan = real_size_biggan(settle_iterations=2)
    fold_spectral_norm(gan)
    return gan


class LibraryGenerator(torch.nn.Module):
    """The model through the library's own batch norms, activations in the weights' dtype."""

    def __init__(self, model, dtype):
        super().__init__()
        self.model = model.to(dtype).eval().requires_grad_(False)
        use_rgb_only_output(self.model.generator)
        self.dtype = dtype

    def forward(self, z, y, truncation):
        return (self.model.generator(torch.cat([z, y], dim=1).to(self.dtype), truncation).float() + 1) / 2

    def decode(self, latents):
        return self(latents.z, latents.y, latents.truncation)


def forward_backward(generator: BigGANGenerator, latents) -> float:
    z, y = latents.z.clone().requires_grad_(), latents.y.clone().requires_grad_()
    start = time.perf_counter()
    with torch.enable_grad():
        generator(z, y, latents.truncation).mean().backward()
    return time.perf_counter() - start


def forward_only(generator: BigGANGenerator, latents) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        generator.decode(latents)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=10, help="candidates per no-grad forward (top-k's chunk)")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    gan = build()
    generators = {"library fp32": LibraryGenerator(copy.deepcopy(gan), torch.float32),
                  "library bf16": LibraryGenerator(copy.deepcopy(gan), torch.bfloat16),
                  "fp32": BigGANGenerator(copy.deepcopy(gan))}
    generators["bf16"] = BigGANGenerator(gan)
    cast_frozen(generators["bf16"].model, "bf16", "vae")
    one = sample_latents(generators["fp32"], 1, seed=0)
    chunk = sample_latents(generators["fp32"], args.chunk, seed=1)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()}", flush=True)
    times = {(name, what): [] for name in generators for what in ("fwd+bwd", "fwd")}
    for generator in generators.values():  # warm-up
        forward_backward(generator, one)
        forward_only(generator, chunk)
    for _ in range(args.repeats):
        for name, generator in generators.items():
            times[(name, "fwd+bwd")].append(forward_backward(generator, one))
            times[(name, "fwd")].append(forward_only(generator, chunk))
    for what, label in (("fwd+bwd", "forward + backward, 1 image"), ("fwd", f"no-grad forward, {args.chunk} images")):
        med = {name: statistics.median(times[(name, what)]) for name in generators}
        print(f"{label}: " + ", ".join(f"{name} {t:.3f} s" for name, t in med.items())
              + f"; bf16 / fp32: pack {med['bf16'] / med['fp32']:.2f}×, library "
              f"{med['library bf16'] / med['library fp32']:.2f}×; pack / library: fp32 "
              f"{med['fp32'] / med['library fp32']:.2f}×, bf16 {med['bf16'] / med['library bf16']:.2f}×")
    print(f"# load at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
