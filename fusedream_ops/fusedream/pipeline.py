"""FuseDream single-image generation (Alg. 1) in one call: sample M latents, keep the top k, optimize the basis."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.progress import StepCallback
from ..models.biggan import BigGANGenerator
from ..models.clip import ClipScorer
from .augment import AugmentPolicy
from .latents import sample_latents
from .objective import AugClipObjective, parse_prompts
from .optimize import OptimizeResult, optimize_basis
from .topk import topk_latents


@dataclass
class FuseDreamSettings:
    """The released code's numbers (M = 10,000 candidates, k = 5, 1000 Adam steps at lr 5e-3, 50 copies, latent
    noise 0.01, top-k by plain CLIP) with the paper's basis: ``mode="paper"`` is eq. 4's one scalar weight per basis
    vector; ``mode="official"`` is the released code's per-element softmax weights."""

    candidates: int = 10_000
    k: int = 5
    steps: int = 1000
    lr: float = 5e-3
    copies: int = 50
    mode: str = "paper"
    latent_noise: float = 0.01
    optimize_y: bool = True
    augment_init: bool = False
    chunk: int = 10
    seed: int = 0


def generate(generator: BigGANGenerator, scorer: ClipScorer, prompt: str,
             settings: FuseDreamSettings = FuseDreamSettings(), policy: AugmentPolicy = AugmentPolicy(),
             on_init_step: StepCallback | None = None, on_step: StepCallback | None = None) -> OptimizeResult:
    """Text → image with FuseDream. ``prompt`` may hold several lines with ``:weight`` suffixes."""
    objective = AugClipObjective(scorer, parse_prompts(prompt), policy, settings.copies)
    candidates = sample_latents(generator, settings.candidates, settings.seed)
    basis, _ = topk_latents(generator, candidates, objective, settings.k, settings.chunk,
                            augment=settings.augment_init, seed=settings.seed, on_step=on_init_step)
    return optimize_basis(generator, basis, objective, settings.steps, settings.lr, settings.mode,
                          settings.latent_noise, settings.optimize_y, settings.seed, on_step=on_step)
