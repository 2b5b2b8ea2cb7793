"""The FuseDream paper's metrics (Table 1; protocol of AttnGAN/DM-GAN): IS, FID and CLIP R-precision.

Table 1 also has "R-prec", AttnGAN's R-precision graded by its DAMSM text and image encoders; that one is NOT
reproduced here (no DAMSM encoders): only "CLIP R-prec", the same retrieval graded by a CLIP.

IS and FID are torchmetrics' ``InceptionScore`` and ``FrechetInceptionDistance``. They receive features already
extracted by the feature network (:mod:`.features`) through :class:`Precomputed`, a custom feature module that
passes them on: torchmetrics accepts any module as its feature extractor, and extraction can then run batched on a
device or on Ray, and the reference statistics can be cached. Both metrics get ``normalize=False``: with
``normalize=True`` torchmetrics before 1.4 turns whatever ``update`` receives into ``(x * 255).byte()``, which
would wrap the features modulo 256 (an FID of 6 read 53).

CLIP R-precision: for each generated image, 100 candidate captions = its own caption + 99 drawn at random from
the other captions (any caption text equal to its own excluded); a hit when its own caption has a strictly higher
cosine under the evaluation CLIP than every distractor (a tie is a miss: captions that differ only in case, or
beyond CLIP's 77 tokens, embed identically); accuracy over all images, repeated 3 times with fresh draws, mean ± std.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from ..core.errors import FuseDreamError, require

MIN_TORCHMETRICS = "1.3"
"""The oldest torchmetrics this module is tested with (also the bound of the ``eval`` extra)."""


def require_torchmetrics():
    """The torchmetrics module, or a [FuseDream] error saying which version to install."""
    try:
        import torchmetrics
    except ImportError:
        raise FuseDreamError("IS/FID need torchmetrics and torch-fidelity: pip install 'fusedream-nodes[eval]' "
                             f"(torchmetrics>={MIN_TORCHMETRICS}).") from None
    from packaging.version import Version

    require(Version(torchmetrics.__version__) >= Version(MIN_TORCHMETRICS),
            f"torchmetrics {torchmetrics.__version__} is too old for the evaluation: install "
            f"torchmetrics>={MIN_TORCHMETRICS} (pip install 'fusedream-nodes[eval]').")
    return torchmetrics


class Precomputed(nn.Module):
    """The identity as torchmetrics' feature module: ``update`` receives features instead of images."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float | None]:
    """IS mean and std over ``splits`` splits (torchmetrics shuffles with the global RNG: seeded here); the std of
    one split is None (torchmetrics gives NaN)."""
    require_torchmetrics()
    from torchmetrics.image.inception import InceptionScore

    require(logits.shape[0] >= splits, f"IS needs at least {splits} images (one per split), got {logits.shape[0]}.")
    state = torch.random.get_rng_state()
    with warnings.catch_warnings():  # "will save all extracted features" (they are in memory), std of one split
        warnings.simplefilter("ignore", UserWarning)
        metric = InceptionScore(feature=Precomputed(logits.shape[1]), splits=splits, normalize=False)
        metric.update(logits.double())
        torch.manual_seed(seed)
        try:
            mean, std = metric.compute()
        finally:
            torch.random.set_rng_state(state)
    return float(mean), float(std) if splits > 1 else None


def inception_score_bound(images: int, splits: int, classes: int) -> float:
    """The largest IS ``images`` in ``splits`` can reach: the mean over torchmetrics' splits (``torch.chunk``) of
    min(split size n, classes C). log IS of a split = mean KL(p(y|x) ‖ p(y)) ≤ log n (p(y) is the mean of n rows)
    and = H(p(y)) − mean H(p(y|x)) ≤ log C."""
    sizes = [len(part) for part in torch.arange(images).chunk(splits)]
    return sum(min(n, classes) for n in sizes) / len(sizes)


def fid_metric(num_features: int):
    require_torchmetrics()
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=Precomputed(num_features), normalize=False, reset_real_features=False)


def real_state(pool: torch.Tensor) -> dict[str, torch.Tensor]:
    """torchmetrics' FID statistics of the real images (sum, sum of outer products, count): what is cached."""
    metric = fid_metric(pool.shape[1])
    metric.update(pool.double(), real=True)
    return {"sum": metric.real_features_sum.clone(), "cov_sum": metric.real_features_cov_sum.clone(),
            "count": metric.real_features_num_samples.clone()}


def frechet_distance(pool: torch.Tensor, real: dict[str, torch.Tensor]) -> float:
    require(pool.shape[0] >= 2, f"FID needs at least 2 generated images, got {pool.shape[0]}.")
    require(real["sum"].numel() == pool.shape[1],
            f"the reference statistics have {real['sum'].numel()} features but the generated images "
            f"{pool.shape[1]}: they were made with another feature network.")
    metric = fid_metric(pool.shape[1])
    metric.real_features_sum = real["sum"].double()
    metric.real_features_cov_sum = real["cov_sum"].double()
    metric.real_features_num_samples = real["count"].long()
    metric.update(pool.double(), real=False)
    return float(metric.compute())


def _draw_others(size: int, own: int, count: int, g: torch.Generator) -> torch.Tensor:
    """``count`` distinct indices of ``range(size)`` other than ``own``, uniformly (no full permutation of a
    30,000-caption pool per image)."""
    if size > 4 * (count + 1):
        draw = torch.randint(size, (4 * (count + 1),), generator=g)
        draw = draw[draw != own]
        seen, picked = set(), []
        for value in draw.tolist():
            if value not in seen:
                seen.add(value)
                picked.append(value)
                if len(picked) == count:
                    return torch.tensor(picked)
    order = torch.randperm(size, generator=g)
    return order[order != own][:count]


def clip_r_precision(image_embeds: torch.Tensor, captions: list[str], text_embeds: dict[str, torch.Tensor],
                pool: list[str], candidates: int = 100, repeats: int = 3,
                seed: int = 0) -> tuple[float, float, int]:
    """Mean and std (over ``repeats``) of the top-1 retrieval accuracy of each image's own caption among
    ``candidates`` (1 true + the rest drawn without replacement from ``pool`` minus captions equal to the true
    one; a tie with a distractor is a miss), and the number of candidates actually used (fewer when the pool is
    smaller)."""
    require(len(captions) == image_embeds.shape[0], "one caption per image is needed for CLIP R-precision.")
    require(repeats >= 1 and candidates >= 2, "CLIP R-precision needs candidates >= 2 and repeats >= 1.")
    distinct = sorted(set(pool))
    index = {c: i for i, c in enumerate(distinct)}
    bank = torch.stack([text_embeds[c] for c in distinct])
    g = torch.Generator().manual_seed(int(seed))
    used = min(candidates, len(distinct))
    require(used >= 2, "CLIP R-precision needs at least 2 different captions.")
    scores = []
    for _ in range(repeats):
        hits = 0
        for i, caption in enumerate(captions):
            others = _draw_others(len(distinct), index[caption], used - 1, g)
            choice = torch.cat([torch.tensor([index[caption]]), others])
            sims = bank[choice] @ image_embeds[i]
            hits += int(sims[0] > sims[1:].max())
        scores.append(hits / len(captions))
    t = torch.tensor(scores, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if repeats > 1 else 0.0, used
