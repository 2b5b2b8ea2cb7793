"""CLIPAG's generator-free text-to-image: optimise the pixels themselves under a perceptually aligned CLIP.

Per step, for images x in [0, 1] (the authors' notebook, ``CLIPAG_T2I.ipynb``):

    L = w_g · (1 − s(DiffAug(x + σ·n), views copies)) + w_p · (1 − s(DiffAug(crop(x) + σ·n), patch copies))

with s the (weighted) CLIP cosine to the prompt averaged over the copies, crops of 128/224 of the side resized to
the model's input size, σ = 0.01; then the gradient of each image is clipped to norm 0.001, AdamW (lr 0.0175,
weight decay 0.01 = torch's default, which the notebook keeps) steps, and dynamic thresholding at the 0.95
quantile brings the image back into [0, 1]. The image with the best global score is returned. Images larger than
the model's input are shrunk (antialiased) before the global views are made; all views of all images go through
CLIP as one batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.autograd import grad_enabled, ordinary
from ..core.errors import require, require_finite, require_positive
from ..core.progress import StepCallback, report
from ..fusedream.augment import diff_augment
from ..fusedream.objective import AugClipObjective
from .thresholding import dynamic_threshold

PATCH_FRACTION = 128 / 224


@dataclass(frozen=True)
class PixelSynthesisSettings:
    steps: int = 100
    lr: float = 0.0175
    weight_decay: float = 0.01
    views: int = 32
    """DiffAugment copies of the whole image per step."""
    patches: int = 32
    """Random crops per step, each resized to the model's input size."""
    patch_fraction: float = PATCH_FRACTION
    """Crop side relative to the image side (the notebook's 128 px of 224)."""
    global_weight: float = 1.0
    patch_weight: float = 5.0
    input_noise: float = 0.01
    """σ of the Gaussian noise added to every view before augmentation."""
    grad_clip: float = 0.001
    """Largest gradient norm per image; 0 disables clipping."""
    threshold: float | None = 0.95
    """Dynamic-thresholding quantile; None clamps to [0, 1] instead."""
    seed: int = 0


@dataclass
class PixelSynthesisResult:
    image: torch.Tensor
    """The best iterate of every image, ``[B,3,H,W]`` in 0..1 on the CPU."""
    best_score: torch.Tensor
    """``[B]`` global score of each returned image at its step."""
    best_step: torch.Tensor
    """``[B]`` step at which each returned image was scored (1-based)."""
    history: list[float] = field(default_factory=list)
    """Mean global score over the batch at every step."""


def random_crops(x: torch.Tensor, count: int, side: int, out_size: tuple[int, int],
                 generator: torch.Generator) -> torch.Tensor:
    """``count`` random ``side``×``side`` crops of each image, bilinearly resized to ``out_size``, in one
    ``grid_sample``: ``[B·count,3,*out_size]``, crops of image b at rows ``b·count … b·count+count−1``."""
    b, _, h, w = x.shape
    n = b * count
    top = torch.randint(0, h - side + 1, (n,), generator=generator).float()
    left = torch.randint(0, w - side + 1, (n,), generator=generator).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = side / w
    theta[:, 1, 1] = side / h
    theta[:, 0, 2] = (2 * left + side) / w - 1
    theta[:, 1, 2] = (2 * top + side) / h - 1
    grid = torch.nn.functional.affine_grid(theta.to(x.device, x.dtype), [n, 3, *out_size], align_corners=False)
    return torch.nn.functional.grid_sample(x.repeat_interleave(count, dim=0), grid, mode="bilinear",
                                           padding_mode="border", align_corners=False)


def fit_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` resized to the model's input ``size`` (antialiased when shrinking); unchanged if it already fits."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def clip_grad_norm_per_image(grad: torch.Tensor, max_norm: float) -> None:
    """Scale each image's gradient in place to norm ≤ ``max_norm`` (torch's clip_grad_norm_, one image at a time)."""
    norms = grad.flatten(1).norm(dim=1)
    grad.mul_((max_norm / (norms + 1e-6)).clamp(max=1.0).view(-1, 1, 1, 1))


def synthesize_pixels(objective: AugClipObjective, init: torch.Tensor,
                      settings: PixelSynthesisSettings = PixelSynthesisSettings(),
                      on_step: StepCallback | None = None) -> PixelSynthesisResult:
    """Optimise images ``init`` ``[B,3,H,W]`` in 0..1 towards the objective's prompt (see the module docstring)."""
    s = settings
    require_positive("steps", s.steps)
    require_positive("views", s.views)
    require(s.patches >= 0, f"patches must be 0 or more, got {s.patches}.")
    require(init.ndim == 4 and init.shape[1] == 3, f"init must be images [B,3,H,W], got {tuple(init.shape)}.")
    require(0 < s.patch_fraction <= 1, f"patch_fraction must be in (0, 1], got {s.patch_fraction}.")
    scorer = objective.scorer
    device = scorer.device
    b, _, h, w = init.shape
    side = max(1, round(min(h, w) * s.patch_fraction))
    cpu_rng = torch.Generator().manual_seed(int(s.seed))
    noise_rng = torch.Generator(device=device).manual_seed(int(s.seed))
    history: list[float] = []
    with grad_enabled():
        x = ordinary(init).detach().to(device=device, dtype=torch.float32).clamp(0, 1).requires_grad_(True)
        best_image = x.detach().clone()
        best_score = torch.full((b,), -float("inf"))
        best_step = torch.zeros(b, dtype=torch.long)
        optimizer = torch.optim.AdamW([x], lr=s.lr, weight_decay=s.weight_decay)
        for step in range(1, s.steps + 1):
            views = fit_to(x, scorer.image_size).repeat_interleave(s.views, dim=0)
            if s.patches:
                views = torch.cat([views, random_crops(x, s.patches, side, scorer.image_size, cpu_rng)])
            if s.input_noise > 0:
                views = views + s.input_noise * torch.randn(views.shape, generator=noise_rng, device=device)
            scores = objective.cosine(diff_augment(views, objective.policy, cpu_rng))
            global_score = scores[:b * s.views].view(b, s.views).mean(dim=1)
            loss = s.global_weight * (1 - global_score).sum()
            values = {"clip": global_score.mean().item()}
            if s.patches:
                patch_score = scores[b * s.views:].view(b, s.patches).mean(dim=1)
                loss = loss + s.patch_weight * (1 - patch_score).sum()
                values["patch_clip"] = patch_score.mean().item()
            require_finite("the CLIP objective", loss.item())
            current = global_score.detach().float().cpu()
            better = current > best_score
            if better.any():
                best_score = torch.where(better, current, best_score)
                best_step[better] = step
                best_image[better.to(device)] = x.detach()[better.to(device)]
            history.append(values["clip"])
            report(on_step, step, s.steps, values, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if s.grad_clip > 0:
                clip_grad_norm_per_image(x.grad, s.grad_clip)
            optimizer.step()
            with torch.no_grad():
                x.copy_(dynamic_threshold(x, s.threshold))
    return PixelSynthesisResult(best_image.cpu(), best_score, best_step, history)
