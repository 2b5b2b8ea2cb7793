"""Starting images for generator-free synthesis: noise, a flat colour, a user image, or the best CLIP match
among samples of a Gaussian model of tiny reference images.

The CLIPAG notebook starts from the latter: every class of a reference set is shrunk to 16×16, modelled by a
full-covariance Gaussian in [-1, 1] pixel units (covariance + 1e-4·I), sampled, mapped to [0, 1], upsampled to the
synthesis size, and the sample CLIP likes best for the prompt is kept. Here the reference set is a folder of
images (one class per sub-folder, or the whole folder as one class) and samples cycle over all classes (the
notebook's sampler only reaches its first 20 classes).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..core.autograd import no_grad_normal_tensors
from ..core.errors import FuseDreamError, require
from ..core.images import from_pil
from ..core.progress import StepCallback, report
from ..fusedream.objective import AugClipObjective
from ..safety.contained import contained_members
from ..safety.image_files import IMAGE_EXTENSIONS, read_image
from ..validation.numbers import require_number

NOISE_MEAN, NOISE_STD = 0.5, 0.25
SMALL_SIZE = 16
RIDGE = 1e-4
MAX_GAUSSIAN_BYTES = 4 * 2**30
"""Largest Gaussian model fitted (its covariance factors): 200 classes at 32 px would need 7.5 GiB."""


def noise_images(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian pixel noise N(0.5, 0.25²) clamped to [0, 1]: ``[batch,3,size,size]``."""
    return (NOISE_MEAN + NOISE_STD * torch.randn(batch, 3, size, size, generator=generator)).clamp(0, 1)


_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def parse_color(text: str) -> tuple[float, float, float]:
    """``#RRGGBB`` or ``r, g, b`` (0–255) as an RGB triple in [0, 1]."""
    text = (text or "").strip()
    match = _HEX.match(text)
    if match:
        value = match.group(1)
        return tuple(int(value[i:i + 2], 16) / 255.0 for i in (0, 2, 4))
    parts = [p.strip() for p in text.split(",")]
    try:
        rgb = [float(p) for p in parts]
    except ValueError:
        rgb = []
    require(len(rgb) == 3 and all(0 <= c <= 255 for c in rgb),
            f"color '{text}' is not a colour: write '#RRGGBB' (e.g. '#7f7f7f') or 'r, g, b' with values 0-255.")
    return tuple(c / 255.0 for c in rgb)


def flat_images(batch: int, size: int, rgb: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(batch, 3, size, size).clone()


def square_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``[N,3,H,W]`` centre-cropped to a square and resized to ``size`` (antialiased when shrinking)."""
    h, w = images.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    images = images[..., top:top + side, left:left + side]
    if side == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=side > size).clamp(0, 1)


@dataclass
class SmallImageGaussians:
    """One full-covariance Gaussian per class over flattened ``3×s×s`` images in [-1, 1] pixel units."""

    means: torch.Tensor
    """``[C, 3·s·s]``"""
    cholesky: torch.Tensor
    """``[C, 3·s·s, 3·s·s]``: L with L·Lᵀ = covariance + ridge·I."""
    small_size: int

    @classmethod
    def fit(cls, groups: list[torch.Tensor], small_size: int = SMALL_SIZE, ridge: float = RIDGE,
            on_step: StepCallback | None = None, max_bytes: int = MAX_GAUSSIAN_BYTES):
        """Fit one Gaussian per group of images ``[N,3,H,W]`` in [0, 1] (any size; shrunk to ``small_size``).

        Memory: the model holds ``classes × (3·s²)² × 4`` bytes (2.25 MiB per class at 16 px, 36 MiB at 32 px),
        refused above ``max_bytes`` before any work; the fit needs that plus one class's float64 covariance and
        factor, because each class is fitted and stored in turn. ``on_step`` is called after each class (cancel).
        """
        require(bool(groups), "reference images: no class of images was given.")
        require_number("small_size", small_size, 1, 64, integer=True)
        dim = 3 * small_size * small_size
        need = len(groups) * dim * dim * 4
        require(need <= max_bytes, f"reference images: {len(groups)} classes at {small_size} px need "
                                   f"{need / 2**30:.1f} GiB for their covariance factors (limit "
                                   f"{max_bytes / 2**30:.1f} GiB): use a smaller small_size (16 px needs "
                                   f"{len(groups) * 768 * 768 * 4 / 2**20:.0f} MiB) or fewer classes.")
        for group in groups:
            require(group.ndim == 4 and group.shape[0] >= 2,
                    "reference images: every class needs at least 2 images for a Gaussian.")
            require(bool(torch.isfinite(group).all()), "reference images hold NaN or infinite pixels.")
        means = torch.empty(len(groups), dim)
        factors = torch.empty(len(groups), dim, dim)
        for i, group in enumerate(groups):
            x = square_resize(group.float(), small_size).flatten(1).double() * 2 - 1
            mean = x.mean(dim=0)
            centred = x - mean
            cov = centred.t() @ centred / (x.shape[0] - 1)
            cov.diagonal().add_(ridge)
            means[i] = mean
            factors[i] = torch.linalg.cholesky(cov)
            del x, centred, cov
            report(on_step, i + 1, len(groups))
        return cls(means, factors, small_size)

    def sample(self, count: int, size: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` samples cycling over the classes, in [0, 1], upsampled to ``[count,3,size,size]``."""
        classes = torch.arange(count) % self.means.shape[0]
        eps = torch.randn(count, self.means.shape[1], generator=generator)
        x = self.means[classes].clone()
        for c in classes.unique().tolist():  # one matmul per class, no per-sample copy of its factor
            rows = classes == c
            x[rows] += eps[rows] @ self.cholesky[c].t()
        x = ((x + 1) / 2).clamp(0, 1).view(count, 3, self.small_size, self.small_size)
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


def _image_files(folder: str, roots: Sequence[str]) -> list[str]:
    return contained_members(folder, roots, "reference images", extensions=IMAGE_EXTENSIONS)


def _load_small(path: str, size: int) -> torch.Tensor:
    return square_resize(from_pil(read_image(path, "reference image", shrink_to=size)), size)


def load_reference_groups(folder: str, small_size: int = SMALL_SIZE,
                          roots: Sequence[str] | None = None) -> list[torch.Tensor]:
    """The images of ``folder`` shrunk to ``small_size``: one group per sub-folder holding images, else one group.

    Members and sub-folders that are symbolic links leading outside ``roots`` (default: ``folder`` itself) are
    skipped with a logged reason.
    """
    require(bool(folder) and os.path.isdir(folder),
            f"reference folder '{folder}' is not a folder: give a folder of images (one sub-folder per class, "
            f"or images directly inside).")
    roots = [folder] if roots is None else roots
    folders = contained_members(folder, roots, "reference folder", folders=True)
    groups = []
    for sub in folders + [folder]:
        files = _image_files(sub, roots)
        if len(files) >= 2:
            groups.append(torch.cat([_load_small(f, small_size) for f in files]))
    require(bool(groups), f"reference folder '{folder}' holds no class with at least 2 images "
                          f"({', '.join(IMAGE_EXTENSIONS)}).")
    return groups


def best_matches(objective: AugClipObjective, pool: torch.Tensor, k: int, chunk: int = 64,
                 on_step: StepCallback | None = None) -> torch.Tensor:
    """The ``k`` images of ``pool`` ``[N,3,H,W]`` with the highest plain CLIP score for the prompt, best first."""
    require(1 <= k <= pool.shape[0], f"cannot pick {k} images from a pool of {pool.shape[0]}.")
    device = objective.scorer.device
    scores = []
    with no_grad_normal_tensors():
        for start in range(0, pool.shape[0], chunk):
            scores.append(objective.cosine(pool[start:start + chunk].to(device)).float().cpu())
            report(on_step, min(start + chunk, pool.shape[0]), pool.shape[0])
    return pool[_finite_scores(torch.cat(scores), "init_image").topk(k).indices]


def _finite_scores(scores: torch.Tensor, what: str) -> torch.Tensor:
    bad = (~torch.isfinite(scores)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise FuseDreamError(f"{what}: CLIP scored image {i} as {float(scores[i])}: the CLIP model's weights are "
                             f"broken.")
    return scores


def best_gaussian_samples(objective: AugClipObjective, gaussians: SmallImageGaussians, count: int, size: int,
                          k: int, seed: int, chunk: int = 64, on_step: StepCallback | None = None) -> torch.Tensor:
    """The CLIPAG init: draw ``count`` samples and keep the ``k`` CLIP likes best (best first), holding only a
    chunk of samples and the current best ``k`` in memory. ``on_step`` is called after every chunk (cancel)."""
    require(1 <= k <= count, f"candidates ({count}) must be at least the batch size ({k}).")
    generator = torch.Generator().manual_seed(int(seed))
    best = torch.empty(0, 3, size, size)
    best_scores = torch.empty(0)
    device = objective.scorer.device
    with no_grad_normal_tensors():
        for start in range(0, count, chunk):
            samples = gaussians.sample(min(chunk, count - start), size, generator)
            scores = _finite_scores(objective.cosine(samples.to(device)).float().cpu(), "init_gaussian")
            pool, pool_scores = torch.cat([best, samples]), torch.cat([best_scores, scores])
            order = pool_scores.topk(min(k, pool_scores.numel())).indices
            best, best_scores = pool[order], pool_scores[order]
            report(on_step, min(start + chunk, count), count)
    return best
