"""CLIPAG costs, side by side: one generator-free synthesis step and one adversarial fine-tuning batch.

    python benchmarks/clipag.py            # real size: open_clip ViT-B-32 at 224 (random weights), 32 views + 32 crops
    python benchmarks/clipag.py --tiny     # the tiny fixture CLIP at 32 px

Rows (median of --repeats):
- synthesis step, pack: all views and crops of the image through CLIP in one batch (what synthesize_pixels does);
- synthesis step, views in a Python loop: one CLIP call per view;
- fine-tuning batch: PGD (3 steps) + the AdamW-direction backward of the image encoder, per batch of --batch pairs,
  and the same batch's clean forward+backward, to show what the attack costs.
Ratios > 1 mean the pack's way is faster (or, for the attack, how many clean steps one adversarial step costs).
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
from fusedream_ops.models.clip import OPENAI_MEAN, OPENAI_STD, ClipScorer  # noqa: E402
from fusedream_ops.clipag.finetune.attack import ImageTower, attack_batch, contrastive_loss  # noqa: E402
from fusedream_ops.clipag.finetune.loop import freeze_all_but_image_encoder  # noqa: E402
from fusedream_ops.clipag.finetune.settings import FinetuneSettings  # noqa: E402
from fusedream_ops.fusedream.objective import AugClipObjective  # noqa: E402
from fusedream_ops.clipag.synthesis import PixelSynthesisSettings, random_crops  # noqa: E402


def scorer(tiny: bool) -> ClipScorer:
    import open_clip

    if tiny:
        from fusedream_ops.fixtures.biggan_clip import tiny_clip

        model = tiny_clip()
    else:
        model = open_clip.create_model("ViT-B-32", pretrained=None)
    return ClipScorer(model, open_clip.get_tokenizer("ViT-B-32"), "ViT-B-32", OPENAI_MEAN, OPENAI_STD)


def synthesis_step(objective: AugClipObjective, x: torch.Tensor, loop: bool) -> float:
    s = PixelSynthesisSettings()
    rng = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    image = x.clone().requires_grad_()
    side = round(image.shape[-1] * s.patch_fraction)
    views = torch.cat([image.repeat_interleave(s.views, dim=0),
                       random_crops(image, s.patches, side, objective.scorer.image_size, rng)])
    views = diff_augment(views + s.input_noise * torch.randn(views.shape, generator=rng), objective.policy, rng)
    if loop:
        scores = torch.cat([objective.cosine(v[None]) for v in views])
    else:
        scores = objective.cosine(views)
    (1 - scores).sum().backward()
    return time.perf_counter() - start


def finetune_batch(tower, images, text, scale, adversarial: bool) -> float:
    start = time.perf_counter()
    if adversarial:
        images = attack_batch(tower, images, text, scale, FinetuneSettings())
    contrastive_loss(tower(images), text, scale).backward()
    return time.perf_counter() - start


def median(fn, repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(fn() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="fine-tuning pairs per batch")
    parser.add_argument("--skip-loop", action="store_true", help="skip the (slow) one-view-per-call row")
    args = parser.parse_args()
    torch.manual_seed(0)
    clip = scorer(args.tiny)
    size = clip.image_size[0]
    objective = AugClipObjective(clip, [("a lighthouse", 1.0)], AugmentPolicy(signed_range=False))
    x = torch.rand(1, 3, size, size)
    print(f"threads {torch.get_num_threads()}, image {size}px, {'tiny CLIP' if args.tiny else 'ViT-B-32'}", flush=True)
    batched = median(lambda: synthesis_step(objective, x, loop=False), args.repeats)
    print(f"synthesis step, 64 views in one batch : {batched:8.3f} s", flush=True)
    print(f"  → 100 steps (authors' recipe)       : {100 * batched / 60:8.1f} min", flush=True)
    if not args.skip_loop:
        looped = median(lambda: synthesis_step(objective, x, loop=True), args.repeats)
        print(f"synthesis step, views in a loop       : {looped:8.3f} s   ratio {looped / batched:5.2f}x", flush=True)

    freeze_all_but_image_encoder(clip.model)
    tower = ImageTower(clip)
    images = torch.rand(args.batch, 3, size, size)
    text = clip.encode_text([f"caption {i}" for i in range(args.batch)])
    scale = clip.model.logit_scale.exp().detach()
    clean = median(lambda: finetune_batch(tower, images, text, scale, adversarial=False), args.repeats)
    adv = median(lambda: finetune_batch(tower, images, text, scale, adversarial=True), args.repeats)
    print(f"fine-tuning batch of {args.batch}, clean fwd+bwd    : {clean:8.3f} s", flush=True)
    print(f"fine-tuning batch of {args.batch}, PGD-3 + fwd+bwd  : {adv:8.3f} s   ratio {adv / clean:5.2f}x clean")


if __name__ == "__main__":
    main()
