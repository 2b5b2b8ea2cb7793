"""The AugCLIP score (FuseDream eq. 3): CLIP cosine averaged over random augmentations of the image.

s_AugCLIP(T, I) = E_{I'~π(·|I)} [ cos(f_text(T), f_image(I')) ].  Several prompts combine as Σ_j w_j s_j, so a
negative weight turns a prompt into a negative prompt. All ``B·copies`` views go through CLIP in one batch.
"""
from __future__ import annotations

import torch

from ..core.autograd import no_grad_normal_tensors
from ..core.errors import FuseDreamError, require
from ..models.clip import ClipScorer
from ..validation.prompts import parse_prompts  # noqa: F401  (the prompt syntax lives with the validation)
from .augment import AugmentPolicy, diff_augment


class AugClipObjective:
    """A scorer, encoded prompts and an augmentation policy; ``score`` maps images to one number each."""

    def __init__(self, scorer: ClipScorer, prompts: list[tuple[str, float]],
                 policy: AugmentPolicy = AugmentPolicy(), copies: int = 50):
        require(bool(prompts), "prompt is empty: give at least one prompt.")
        for text, _ in prompts:
            require(bool(text.strip()), "prompt is empty: every prompt needs some text.")
        require(copies >= 1, f"copies must be at least 1, got {copies}.")
        self.scorer = scorer
        self.prompts = list(prompts)
        self.policy = policy
        self.copies = copies
        with no_grad_normal_tensors():
            self.weights = torch.tensor([w for _, w in prompts], dtype=torch.float32)
            self.text_features = scorer.encode_text([t for t, _ in prompts])

    def _text(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.text_features.device != device:
            with no_grad_normal_tensors():
                self.text_features = self.text_features.to(device)
        return self.text_features, self.weights.to(device)

    def views(self, images: torch.Tensor, generator: torch.Generator | None = None, copies: int | None = None,
              augment: bool = True) -> tuple[torch.Tensor, int]:
        """What AugCLIP averages over: ``copies`` DiffAugment draws of each image (the images themselves when
        augmentation is off), and how many views each image has."""
        if not (augment and self.policy.active):
            return images, 1
        copies = self.copies if copies is None else copies
        if copies < 1:
            raise FuseDreamError(f"copies must be at least 1, got {copies}.")
        return diff_augment(images.repeat_interleave(copies, dim=0), self.policy, generator), copies

    def similarity(self, features: torch.Tensor) -> torch.Tensor:
        """Prompt-weighted cosine of normalised image features to the encoded prompts: ``[N]``."""
        text, weights = self._text(features.device)
        return (features @ text.t()) @ weights

    def cosine(self, images: torch.Tensor) -> torch.Tensor:
        """Weighted CLIP cosine of each image without augmentation (the official top-k score): ``[B]``."""
        return self.similarity(self.scorer.encode_images(images))

    def score(self, images: torch.Tensor, generator: torch.Generator | None = None,
              copies: int | None = None, augment: bool = True) -> torch.Tensor:
        """AugCLIP of images ``[B,3,H,W]`` in 0..1: ``[B]``, differentiable in ``images``."""
        views, per_image = self.views(images, generator, copies, augment)
        return self.cosine(views).view(images.shape[0], per_image).mean(dim=1)

    def mean_score(self, images: torch.Tensor, draws: int, seed: int, copies: int | None = None) -> torch.Tensor:
        """AugCLIP averaged over ``draws`` independent batches of views, without gradients: ``[B]``."""
        require(draws >= 1, f"draws must be at least 1, got {draws}.")
        rng = torch.Generator().manual_seed(int(seed))
        with no_grad_normal_tensors():
            return torch.stack([self.score(images, rng, copies) for _ in range(draws)]).mean(dim=0)


def batched_score(objectives: list[AugClipObjective], images: torch.Tensor, generators: list[torch.Generator],
                  copies: int | None = None) -> torch.Tensor:
    """AugCLIP of image ``i`` under ``objectives[i]`` with augmentations drawn from ``generators[i]``: ``[B]``.

    Independent problems (other prompts, other seeds) share one CLIP batch; each problem draws its views exactly as
    ``objectives[i].score(images[i:i+1], generators[i], copies)`` would, so a batch reproduces the single runs.
    """
    scorer = objectives[0].scorer
    require(all(o.scorer is scorer for o in objectives), "problems optimised together must share one CLIP model.")
    views, sizes = zip(*(o.views(image, g, copies) for o, image, g in zip(objectives, images.split(1), generators)))
    features = scorer.encode_images(torch.cat(views))
    return torch.cat([o.similarity(part).mean().view(1) for o, part in zip(objectives, features.split(list(sizes)))])
