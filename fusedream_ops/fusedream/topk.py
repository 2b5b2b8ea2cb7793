"""FuseDream's initialisation (Alg. 1, line 2): score M random latents, keep the k best as the basis."""
from __future__ import annotations

import copy

import torch

from ..core.errors import FuseDreamError, require, require_positive
from ..core.progress import StepCallback, report
from ..models.biggan import BigGANGenerator
from ..models.clip import ClipScorer
from ..validation.finite import nonfinite_weight
from .latents import BigGANLatent
from .objective import AugClipObjective


def require_finite_scores(scores: torch.Tensor, index: torch.Tensor, generator, objective) -> None:
    """Stop at the first candidate whose score is NaN/inf, naming it (and a broken model weight if there is one)."""
    bad = ~torch.isfinite(scores)
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        weight = nonfinite_weight(generator, objective)
        cause = f"the model weight {weight} holds NaN/inf" if weight else "its latent or image is not finite"
        raise FuseDreamError(f"top-k: candidate {int(index[first])} scored {float(scores[first])} ({cause}).")

MAX_CHUNK = 64
"""Above this many candidates per chunk throughput no longer grows (the generator's GEMMs are already large)."""
MEMORY_SHARE = 0.5
"""Share of the free memory a chunk may take."""


def free_memory(device) -> int:
    """Free bytes on ``device``: ``torch.cuda.mem_get_info`` on CUDA, ``MemAvailable`` of /proc/meminfo on a CPU
    (4 GiB when it cannot be read)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return 4 << 30


def chunk_for_memory(generator: BigGANGenerator, free_bytes: int, element_size: int = 4) -> int:
    """Candidates per chunk so that a chunk's activations take at most ``MEMORY_SHARE`` of ``free_bytes``.

    A candidate's no-grad forward keeps about 8 full-resolution feature maps of ``channel_width`` channels alive
    at its peak (the last up-sampling block: input, up-sampled input, bottleneck maps, skip and output); CLIP's
    activations for one image are an order of magnitude smaller.
    """
    per_candidate = 8 * generator.resolution ** 2 * generator.config.channel_width * element_size
    return max(1, min(MAX_CHUNK, int(free_bytes * MEMORY_SHARE) // per_candidate))


def _frozen_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``model`` in ``dtype``; a ComfyUI ModelPatcher attached to it is shared, not copied."""
    patcher = getattr(model, "_fusedream_patcher", None)
    return copy.deepcopy(model, {} if patcher is None else {id(patcher): patcher}).to(dtype)


def scoring_copies(generator: BigGANGenerator, objective: AugClipObjective, generator_dtype: torch.dtype | None,
                   scorer_dtype: torch.dtype | None) -> tuple[BigGANGenerator, AugClipObjective]:
    """The generator and objective with their weights in ``generator_dtype`` / ``scorer_dtype`` (None: as they are)
    for no-grad scoring; copies only where the dtype differs (the text features are shared, the originals
    untouched). Each model keeps its own role: a bf16 CLIP does not put the generator in bf16. A scorer whose image
    tower ComfyUI manages (:class:`~fusedream_ops.models.clip_vision_tower.VisionTowerScorer`) keeps its precision."""
    if generator_dtype is not None and generator.dtype != generator_dtype:
        generator = BigGANGenerator(_frozen_copy(generator.model, generator_dtype), generator.class_names,
                                    generator.name)
    if scorer_dtype is not None and type(objective.scorer) is ClipScorer and objective.scorer.dtype != scorer_dtype:
        scorer = objective.scorer
        objective = copy.copy(objective)
        objective.scorer = ClipScorer(_frozen_copy(scorer.model, scorer_dtype), scorer.tokenizer, scorer.name)
        objective.scorer.mean, objective.scorer.std = scorer.mean, scorer.std
    return generator, objective


def topk_latents(generator: BigGANGenerator, candidates: BigGANLatent, objective: AugClipObjective, k: int,
                 chunk: int = 10, augment: bool = False, copies: int | None = None, seed: int = 0,
                 on_step: StepCallback | None = None,
                 generator_dtype: torch.dtype | None = None,
                 scorer_dtype: torch.dtype | None = None) -> tuple[BigGANLatent, torch.Tensor]:
    """The ``k`` candidates with the highest score, best first, and their scores.

    Candidates are generated and scored ``chunk`` at a time in inference mode while a running top-k is kept, so
    memory is bounded by the chunk size whatever M is; ``chunk=0`` sizes it from the free memory
    (:func:`chunk_for_memory`). The running best stay on the compute device. ``generator_dtype`` /
    ``scorer_dtype`` score with copies of the models in those dtypes (each resolved for its own role, see
    :func:`~fusedream_ops.core.precision.resolve_dtype`); None scores with a model as it is. The official code scores with
    plain CLIP (``augment=False``); ``augment=True`` scores with AugCLIP as the paper writes.
    """
    m = len(candidates)
    require_positive("candidates", m)
    require(1 <= k <= m, f"k must be between 1 and the number of candidates ({m}), got {k}.")
    require(chunk >= 0, f"chunk must be at least 0 (0 = from the free memory), got {chunk}.")
    device = generator.device
    generator, objective = scoring_copies(generator, objective, generator_dtype, scorer_dtype)
    if chunk == 0:
        chunk = chunk_for_memory(generator, free_memory(device), generator.dtype.itemsize)
    rng = torch.Generator().manual_seed(int(seed))
    total = (m + chunk - 1) // chunk
    best_index = torch.empty(0, dtype=torch.long)
    with torch.inference_mode():
        best_scores = torch.empty(0, device=device)
        best_images = None
        for step, start in enumerate(range(0, m, chunk), start=1):
            index = torch.arange(start, min(start + chunk, m))
            images = generator.decode(candidates.select(index))
            scores = objective.score(images, rng, copies, augment=augment).float()
            require_finite_scores(scores, index, generator, objective)
            all_scores = torch.cat([best_scores, scores])
            order = all_scores.topk(min(k, all_scores.numel())).indices
            pool_images = images if best_images is None else torch.cat([best_images, images])
            best_scores = all_scores[order]
            best_index = torch.cat([best_index, index])[order.cpu()]
            best_images = pool_images[order]
            report(on_step, step, total, {"best": best_scores[0].item()}, best_images[:1])
        scores = best_scores.cpu()
    return candidates.select(best_index), scores.clone()
