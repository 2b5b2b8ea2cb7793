"""One FuseDream optimisation step, measured side by side: what freezing weights and batching copies buy.

    python benchmarks/augclip_step.py            # real sizes: BigGAN-deep-256 + ViT-B-32 (random weights)
    python benchmarks/augclip_step.py --tiny     # the tiny fixture models

Rows (same run, same inputs, median of --repeats):
- pack: frozen weights, all copies in one CLIP call (what optimize_basis does);
- weights with requires_grad: backward also computes every weight gradient;
- copies in a Python loop: one CLIP call per augmented copy.
Ratios > 1 mean the pack's way is faster.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fusedream_ops.fusedream.augment import AugmentPolicy, diff_augment  # noqa: E402
from fusedream_ops.models.biggan import BigGANGenerator, fold_spectral_norm  # noqa: E402
from fusedream_ops.models.clip import ClipScorer, OPENAI_MEAN, OPENAI_STD  # noqa: E402
from fusedream_ops.fusedream.objective import AugClipObjective  # noqa: E402


def models(tiny: bool):
    import open_clip

    if tiny:
        from fusedream_ops.fixtures.biggan_clip import tiny_biggan, tiny_clip

        gan, clip, arch = tiny_biggan(), tiny_clip(), "ViT-B-32"
    else:
        from fusedream_ops.fixtures.biggan_clip import real_size_biggan

        gan = real_size_biggan(settle_iterations=5)
        clip, arch = open_clip.create_model("ViT-B-32", pretrained=None), "ViT-B-32"
    fold_spectral_norm(gan)
    return BigGANGenerator(gan), ClipScorer(clip, open_clip.get_tokenizer(arch), arch, OPENAI_MEAN, OPENAI_STD)


def step(generator, objective, z, y, loop_copies: bool) -> float:
    start = time.perf_counter()
    zz, yy = z.clone().requires_grad_(), y.clone().requires_grad_()
    image = generator(zz, yy)
    if loop_copies:
        rng = torch.Generator().manual_seed(0)
        views = [diff_augment(image, objective.policy, rng) for _ in range(objective.copies)]
        score = torch.stack([objective.cosine(v) for v in views]).mean()
    else:
        score = objective.score(image, torch.Generator().manual_seed(0)).mean()
    (-score).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    generator, scorer = models(args.tiny)
    objective = AugClipObjective(scorer, [("a photo of a blue dog", 1.0)], AugmentPolicy(), args.copies)
    z = torch.randn(1, generator.z_dim).clamp(-2, 2)
    y = generator.class_embedding(torch.tensor([207])).detach()

    def frozen_step(trainable: bool, loop: bool) -> float:
        generator.requires_grad_(trainable)
        scorer.model.requires_grad_(trainable)
        return step(generator, objective, z, y, loop)

    variants = {"pack": (False, False), "trainable": (True, False), "loop": (False, True)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for name, flags in variants.items():
        frozen_step(*flags)
    for _ in range(args.repeats):  # interleaved, so load on a noisy machine hits every variant alike
        for name, flags in variants.items():
            times[name].append(frozen_step(*flags))
    frozen, trainable, loop = (statistics.median(times[n]) for n in ("pack", "trainable", "loop"))
    print(f"{'variant':<38}{'s/step':>8}{'pack is faster by':>20}")
    print(f"{'pack (frozen, one batched CLIP call)':<38}{frozen:>8.2f}{'1.00x':>20}")
    print(f"{'weights with requires_grad':<38}{trainable:>8.2f}{trainable / frozen:>19.2f}x")
    print(f"{'copies in a Python loop':<38}{loop:>8.2f}{loop / frozen:>19.2f}x")


if __name__ == "__main__":
    main()
