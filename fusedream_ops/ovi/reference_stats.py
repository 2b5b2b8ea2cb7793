"""Statistics of real-image CLIP embeddings for OVI's constraints (custom type ``OVI_REFERENCE_STATS``).

Mean and shrinkage covariance feed the Mahalanobis constraint, the embedding bank the nearest-neighbour
constraint. Built once from the user's images and kept as one safetensors file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..core.errors import FuseDreamError, require
from ..core.progress import StepCallback, report
from ..safety.contained import contained_members
from ..safety.image_files import IMAGE_EXTENSIONS

FORMAT = "fusedream-ovi-reference-stats/1"
KEYS = {"mean", "covariance", "bank"}


@dataclass
class ReferenceStats:
    mean: torch.Tensor
    """``[D]`` mean of the reference image embeddings (unnormalized, as the image encoder outputs them)."""
    covariance: torch.Tensor
    """``[D,D]`` shrinkage covariance, positive definite."""
    bank: torch.Tensor
    """``[N,D]`` the reference embeddings themselves, for nearest-neighbour search."""
    shrinkage: float
    _precision: Optional[torch.Tensor] = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def __len__(self) -> int:
        return int(self.bank.shape[0])

    def to(self, device) -> "ReferenceStats":
        moved = ReferenceStats(self.mean.to(device), self.covariance.to(device), self.bank.to(device), self.shrinkage)
        moved._precision = None if self._precision is None else self._precision.to(device)
        return moved

    @property
    def precision(self) -> torch.Tensor:
        """``Σ⁻¹`` (computed once in float64 for accuracy, kept in float32)."""
        if self._precision is None:
            self._precision = torch.linalg.inv(self.covariance.double()).float()
        return self._precision

    def mahalanobis(self, e: torch.Tensor) -> torch.Tensor:
        """``[B]`` distance ``sqrt((e-μ)ᵀ Σ⁻¹ (e-μ))`` of embeddings ``[B,D]`` (differentiable)."""
        d = e.float() - self.mean
        return ((d @ self.precision) * d).sum(-1).clamp_min(1e-12).sqrt()

    def nearest_cosine(self, e: torch.Tensor) -> torch.Tensor:
        """``[B]`` cosine similarity of each embedding to its nearest reference (by cosine)."""
        return (F.normalize(e.float(), dim=-1) @ F.normalize(self.bank, dim=-1).T).max(-1).values


def ledoit_wolf_shrinkage(x: torch.Tensor) -> float:
    """Ledoit & Wolf (2004) optimal weight of the scaled identity in ``(1-s)·S + s·(tr S/D)·I`` for samples ``x``."""
    n, p = x.shape
    x = (x - x.mean(0)).double()
    x2 = x * x
    emp_trace = x2.sum(0) / n
    mu = emp_trace.sum() / p
    delta_ = ((x.T @ x) ** 2).sum() / n**2
    beta_ = (x2.T @ x2).sum()
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2 * mu * emp_trace.sum() + p * mu**2) / p
    beta = torch.minimum(beta, delta)
    return 0.0 if beta <= 0 else float(beta / delta)


def build_reference_stats(embeds: torch.Tensor, shrinkage: Optional[float] = None) -> ReferenceStats:
    """Mean, shrinkage covariance and bank of ``[N,D]`` embeddings (``shrinkage=None``: Ledoit–Wolf's estimate).

    With fewer images than dimensions the sample covariance is singular; shrinking toward ``(tr S / D)·I`` makes it
    invertible for any ``shrinkage > 0``.
    """
    require(embeds.ndim == 2 and embeds.shape[0] >= 2,
            f"reference statistics need at least 2 images, got {embeds.shape[0] if embeds.ndim == 2 else 0}.")
    x = embeds.detach().float().cpu()
    mean = x.mean(0)
    centered = (x - mean).double()
    sample_cov = centered.T @ centered / x.shape[0]
    scale = float(torch.trace(sample_cov) / x.shape[1])
    require(scale > 0, "all reference images have the same embedding; use different images.")
    s = ledoit_wolf_shrinkage(x) if shrinkage is None else float(shrinkage)
    require(0.0 < s <= 1.0 or (s == 0.0 and x.shape[0] > x.shape[1]),
            f"shrinkage must be in (0, 1] (0 only with more images than the {x.shape[1]} dimensions), got {s}.")
    s = max(s, 1e-6)
    cov = (1 - s) * sample_cov + s * scale * torch.eye(x.shape[1], dtype=torch.float64)
    return ReferenceStats(mean, cov.float(), x.clone(), s)


def save_reference_stats(stats: ReferenceStats, path: str, source: str = "") -> str:
    """Write ``stats`` to a ``.safetensors`` file (atomically: a failed write leaves no half file).

    ``source`` names where the images came from, relative to its root (``input/cats``); an absolute path is cut to
    its last part, so a shared statistics file never tells where the server keeps its folders.
    """
    from ..core.checkpoints import save_safetensors

    require(path.lower().endswith(".safetensors"), f"reference statistics file must end in .safetensors: '{path}'.")
    tensors = {"mean": stats.mean.contiguous().cpu(), "covariance": stats.covariance.contiguous().cpu(),
               "bank": stats.bank.contiguous().cpu()}
    source = os.path.basename(os.path.normpath(source)) if os.path.isabs(source) else source
    meta = {"format": FORMAT, "shrinkage": json.dumps(stats.shrinkage), "count": str(len(stats)), "source": source}
    save_safetensors(tensors, path, meta)
    return path


def load_reference_stats(path: str, roots: Sequence[str] = ()) -> ReferenceStats:
    """Statistics saved by :func:`save_reference_stats`, from a file resolving inside ``roots`` or its own folder."""
    from safetensors import safe_open

    from ..safety.contained import contained_file, entry_roots

    require(os.path.isfile(path), f"reference statistics file '{path}' does not exist.")
    path = contained_file(path, entry_roots(path, roots), "reference statistics file")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            keys = set(f.keys())
            require(meta.get("format") == FORMAT and keys == KEYS,
                    f"'{path}' is not an OVI reference statistics file (format {meta.get('format')!r}, keys "
                    f"{sorted(keys)}; expected {FORMAT!r} with {sorted(KEYS)}).")
            tensors = {k: f.get_tensor(k).float() for k in KEYS}
    except FuseDreamError:
        raise
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise FuseDreamError(f"could not read reference statistics '{path}': {exc}") from exc
    mean, cov, bank = tensors["mean"], tensors["covariance"], tensors["bank"]
    require(mean.ndim == 1 and mean.shape[0] > 0 and cov.shape == (mean.shape[0],) * 2 and bank.ndim == 2
            and bank.shape[1] == mean.shape[0],
            f"'{path}' has inconsistent shapes: mean {tuple(mean.shape)}, covariance {tuple(cov.shape)}, "
            f"bank {tuple(bank.shape)} (expected [D], [D,D], [N,D]).")
    require(bank.shape[0] > 0, f"'{path}' holds an empty embedding bank (0 reference images); rebuild it.")
    require(all(bool(torch.isfinite(t).all()) for t in (mean, cov, bank)),
            f"'{path}' holds NaN or infinite values; rebuild it.")
    require(int(torch.linalg.cholesky_ex(cov.double()).info) == 0,
            f"'{path}' has a covariance that is not positive definite (singular), so the Mahalanobis distance is "
            f"undefined; rebuild it with a shrinkage above 0.")
    try:
        shrinkage = float(json.loads(meta.get("shrinkage", "0")))
    except (ValueError, TypeError):
        raise FuseDreamError(f"'{path}' has unreadable metadata: shrinkage {meta.get('shrinkage')!r} is not a "
                             f"number.") from None
    return ReferenceStats(mean, cov, bank, shrinkage)


def image_files(folder: str, roots: Optional[Sequence[str]] = None) -> list[str]:
    """The image files directly in ``folder`` (sorted), or a clear error if there are none. Members that are
    symbolic links leading outside ``roots`` (default: ``folder`` itself) are skipped with a logged reason."""
    require(bool(folder) and os.path.isdir(folder), f"reference image folder '{folder}' does not exist.")
    files = contained_members(folder, [folder] if roots is None else roots, "reference image folder",
                              extensions=IMAGE_EXTENSIONS)
    require(len(files) > 0, f"reference image folder '{folder}' holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    return files


def embed_image_files(paths: list[str], encode: Callable[[list[torch.Tensor]], torch.Tensor], batch_size: int = 16,
                      on_step: Optional[StepCallback] = None, shrink_to: Optional[int] = None) -> torch.Tensor:
    """Encode image files ``batch_size`` at a time (never all in memory); ``on_step`` once per batch. ``shrink_to``:
    the shorter side worth keeping (twice the encoder's input side), so a large photo is shrunk by a whole factor
    before it becomes a float tensor (see :func:`~fusedream_ops.safety.image_files.read_image`)."""
    from ..core.images import from_pil
    from ..safety.image_files import read_image

    outs = []
    total = (len(paths) + batch_size - 1) // batch_size
    for i, start in enumerate(range(0, len(paths), batch_size)):
        batch = [from_pil(read_image(path, "reference image", shrink_to=shrink_to))
                 for path in paths[start:start + batch_size]]
        outs.append(encode(batch).cpu())
        report(on_step, i + 1, total)
    return torch.cat(outs)
