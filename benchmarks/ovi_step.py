"""Cost of one OVI step at Kandinsky 2.2's real tower width, side by side with encoding a real image.

Builds the ViT-bigG/14 vision tower of the Kandinsky 2.2 prior (hidden 1664, 16 heads, MLP 8192, patch 14, 224 px,
projection 1280) with random weights and ``--layers`` of its 48 blocks (the full tower is 1.8 B parameters; the cost
is linear in the depth, so the 48-layer figure is extrapolated), then times forward+backward of:

* an OVI step with 1 and 6 pseudo-tokens (the paper's range), and
* the same tower on one 224x224 image (257 tokens), what optimizing pixels through the tower would cost per step.

    python benchmarks/ovi_step.py [--layers 4] [--repeats 3] [--device cpu|cuda] [--dtype fp32|fp16]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fusedream_ops.ovi import optimize as ovi  # noqa: E402


def bigg_tower(layers: int, device, dtype):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=1664, intermediate_size=8192, num_hidden_layers=layers,
                              num_attention_heads=16, image_size=224, patch_size=14, projection_dim=1280,
                              hidden_act="gelu")
    return CLIPVisionModelWithProjection(config).eval().requires_grad_(False).to(device, dtype)


def timed(fn, repeats: int) -> float:
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), torch.float16 if args.dtype == "fp16" else torch.float32
    tower = bigg_tower(args.layers, device, dtype)
    target = torch.randn(1, 1280, device=device)

    def ovi_step(n):
        tokens = torch.randn(1, n, 1664, device=device, requires_grad=True)

        def run():
            e = ovi.embed_pseudo_tokens(tower, tokens * 0.02, "patches")
            (1 - torch.nn.functional.cosine_similarity(e, target).sum()).backward()

        return run

    pixels = torch.randn(1, 3, 224, 224, device=device, dtype=dtype, requires_grad=True)

    def image_step():
        e = tower(pixel_values=pixels).image_embeds.float()
        (1 - torch.nn.functional.cosine_similarity(e, target).sum()).backward()

    rows = [("OVI step, 1 token", timed(ovi_step(1), args.repeats)),
            ("OVI step, 6 tokens", timed(ovi_step(6), args.repeats)),
            ("one 224px image through the tower", timed(image_step, args.repeats))]
    scale = 48 / args.layers
    base = rows[0][1]
    print(f"ViT-bigG/14 vision tower, {args.layers} of 48 layers, {args.device} {args.dtype}, "
          f"{torch.get_num_threads()} threads; forward+backward per step")
    print(f"{'':36s} {'measured':>10s} {'48 layers':>10s} {'500 steps':>10s} {'ratio':>7s}")
    for name, seconds in rows:
        print(f"{name:36s} {seconds:9.3f}s {seconds * scale:9.2f}s {seconds * scale * 500 / 60:8.1f}min "
              f"{seconds / base:6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
