"""FuseDream's initialisation (Alg. 1, line 2): score M random latents, keep the k best as the basis."""
from __future__ import annotations

import torch

from .autograd import no_grad_normal_tensors
from .biggan import BigGANGenerator
from .errors import FuseDreamError, require, require_positive
from .latents import BigGANLatent
from .objective import AugClipObjective
from .progress import StepCallback, report
from .validation.finite import nonfinite_weight


def require_finite_scores(scores: torch.Tensor, index: torch.Tensor, generator, objective) -> None:
    """Stop at the first candidate whose score is NaN/inf, naming it (and a broken model weight if there is one)."""
    bad = ~torch.isfinite(scores)
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        weight = nonfinite_weight(generator, objective)
        cause = f"the model weight {weight} holds NaN/inf" if weight else "its latent or image is not finite"
        raise FuseDreamError(f"top-k: candidate {int(index[first])} scored {float(scores[first])} ({cause}).")


def topk_latents(generator: BigGANGenerator, candidates: BigGANLatent, objective: AugClipObjective, k: int,
                 chunk: int = 10, augment: bool = False, copies: int | None = None, seed: int = 0,
                 on_step: StepCallback | None = None) -> tuple[BigGANLatent, torch.Tensor]:
    """The ``k`` candidates with the highest score, best first, and their scores.

    Candidates are generated and scored ``chunk`` at a time without gradients while a running top-k is kept,
    so memory is bounded by the chunk size whatever M is; the running best stay on the compute device. The official code scores with plain CLIP
    (``augment=False``); ``augment=True`` scores with AugCLIP as the paper writes.
    """
    m = len(candidates)
    require_positive("candidates", m)
    require(1 <= k <= m, f"k must be between 1 and the number of candidates ({m}), got {k}.")
    require_positive("chunk", chunk)
    rng = torch.Generator().manual_seed(int(seed))
    total = (m + chunk - 1) // chunk
    best_scores = torch.empty(0)
    best_index = torch.empty(0, dtype=torch.long)
    best_images = None
    with no_grad_normal_tensors():
        for step, start in enumerate(range(0, m, chunk), start=1):
            index = torch.arange(start, min(start + chunk, m))
            images = generator.decode(candidates.select(index))
            scores = objective.score(images, rng, copies, augment=augment).float()
            require_finite_scores(scores, index, generator, objective)
            all_scores = torch.cat([best_scores.to(scores.device), scores])
            order = all_scores.topk(min(k, all_scores.numel())).indices
            pool_images = images if best_images is None else torch.cat([best_images, images])
            best_scores = all_scores[order]
            best_index = torch.cat([best_index, index])[order.cpu()]
            best_images = pool_images[order]
            report(on_step, step, total, {"best": best_scores[0].item()}, best_images[:1])
    return candidates.select(best_index), best_scores.cpu()
