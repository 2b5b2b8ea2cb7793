"""Ranking any images by AugCLIP: scores in bounded memory, the same augmentations for every image, best first.

The score of image ``i`` is FuseDream's eq. 3 averaged over ``draws`` batches of ``copies`` views,
``s_i = 1/draws Σ_d score(I_i, views drawn from seed + d)``, with the objective's prompt weights (a negative weight is
a negative prompt). Every image gets the *same* augmentation draws (common random numbers): score differences then
come from the images, not from luckier crops, and an image's score does not depend on its place in the batch, the
batch size or the chunking. Images are scored ``chunk`` at a time, so a batch of thousands of frames needs no more
device memory than one chunk.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.autograd import no_grad_normal_tensors
from ..core.errors import FuseDreamError, require
from ..core.progress import StepCallback, report
from .objective import AugClipObjective
from .topk import MEMORY_SHARE, free_memory

MAX_VIEWS_PER_BATCH = 512
"""Views encoded in one CLIP batch at most: beyond this throughput no longer grows."""
AUGMENT_COPIES_ALIVE = 16
"""Full-resolution copies of a view alive at once while it is augmented (repeat, colour, grid, sample, cutout)."""
CLIP_ACTIVATIONS_PER_INPUT = 64
"""A ViT's no-grad peak activations per view, in multiples of its input (generous up to ViT-L/14-336)."""


@dataclass
class Ranking:
    scores: torch.Tensor
    """``[B]`` float32 scores in the input order."""
    order: torch.Tensor
    """``[B]`` input indices, best first (ties keep the input order)."""

    def top(self, n: int) -> torch.Tensor:
        return self.order[:n]


def views_per_image(objective: AugClipObjective, augment: bool) -> int:
    return objective.copies if augment and objective.policy.active else 1


def chunk_for_memory(objective: AugClipObjective, height: int, width: int, augment: bool, free_bytes: int) -> int:
    """Images per chunk so that a chunk's views and their CLIP activations take at most ``MEMORY_SHARE`` of
    ``free_bytes``, and at most ``MAX_VIEWS_PER_BATCH`` views go through CLIP at once."""
    side_h, side_w = objective.scorer.image_size
    per_view = 4 * 3 * (AUGMENT_COPIES_ALIVE * height * width + CLIP_ACTIVATIONS_PER_INPUT * side_h * side_w)
    views = views_per_image(objective, augment)
    by_memory = int(free_bytes * MEMORY_SHARE) // (per_view * views)
    return max(1, min(by_memory, max(1, MAX_VIEWS_PER_BATCH // views)))


def draw_generator(seed: int, draw: int) -> torch.Generator:
    """The generator of draw ``draw``: the same for every image, so all images see the same augmentations."""
    return torch.Generator().manual_seed((int(seed) + draw) % 2**64)


def score_images(objective: AugClipObjective, images: torch.Tensor, draws: int = 1, seed: int = 0,
                 augment: bool = True, chunk: int = 0, on_step: StepCallback | None = None) -> torch.Tensor:
    """AugCLIP of every image of ``images`` ``[B,3,H,W]`` in 0..1 (any device; the CPU for large batches): ``[B]``.

    ``augment=False`` scores the images themselves (plain weighted CLIP cosine, one view, so one draw). ``chunk=0`` sizes the
    chunk from the free memory of the scorer's device (:func:`chunk_for_memory`). ``on_step`` is called after each
    CLIP batch (and may raise to cancel).
    """
    require(images.ndim == 4 and images.shape[1] == 3, f"images must be [B,3,H,W], got {tuple(images.shape)}.")
    count = images.shape[0]
    require(count >= 1, "the image batch is empty: connect at least one image.")
    require(draws >= 1, f"draws must be at least 1, got {draws}.")
    require(chunk >= 0, f"chunk must be at least 0 (0 = from the free memory), got {chunk}.")
    if views_per_image(objective, augment) == 1:
        draws = 1  # one unaugmented view: every draw would compute the same cosine
    device = objective.scorer.device
    if chunk == 0:
        chunk = chunk_for_memory(objective, images.shape[2], images.shape[3], augment, free_memory(device))
    starts = range(0, count, chunk)
    total = len(starts) * draws
    step = 0
    with no_grad_normal_tensors():
        scores = torch.empty(count, dtype=torch.float32)
        for start in starts:
            part = images[start:start + chunk].to(device, torch.float32)
            total_score = torch.zeros(part.shape[0], device=device)
            for draw in range(draws):
                views, sizes = zip(*(objective.views(image, draw_generator(seed, draw), augment=augment)
                                     for image in part.split(1)))
                features = objective.scorer.encode_images(torch.cat(views))
                similarity = objective.similarity(features).view(part.shape[0], sizes[0])
                total_score += similarity.mean(dim=1)
                step += 1
                report(on_step, step, total)
            scores[start:start + part.shape[0]] = (total_score / draws).cpu()
            bad = (~torch.isfinite(scores[start:start + part.shape[0]])).nonzero()
            if bad.numel():  # stop at the first chunk that shows it, not after the whole batch
                index = start + int(bad[0])
                raise FuseDreamError(f"image {index} of the batch scored {float(scores[index])}: the image or the "
                                     f"CLIP model holds NaN/inf values.")
    return scores


def rank(scores: torch.Tensor) -> Ranking:
    """Indices of ``scores`` from the highest to the lowest; equal scores keep their input order."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return Ranking(scores, order)


def rank_images(objective: AugClipObjective, images: torch.Tensor, draws: int = 1, seed: int = 0,
                augment: bool = True, chunk: int = 0, on_step: StepCallback | None = None) -> Ranking:
    """:func:`score_images` then :func:`rank`."""
    return rank(score_images(objective, images, draws, seed, augment, chunk, on_step))
