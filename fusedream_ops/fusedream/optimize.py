"""FuseDream's optimisation (Alg. 1, line 3): maximise AugCLIP over the over-parameterised basis with Adam.

Several independent problems (other seeds, other prompts, other bases) can be optimised together: one generator
batch, one CLIP batch and one backward per step for all of them. Problem ``i`` draws its latent noise and
augmentations from its own seeded generator in the order a single run does, and Adam is element-wise, so each
result is the one its own run would give (up to the rounding of batched kernels).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.autograd import grad_enabled, no_grad_normal_tensors
from ..core.errors import require, require_finite, require_positive
from ..core.progress import StepCallback, report
from ..models.biggan import BigGANGenerator
from .basis import LatentBasis
from .latents import BigGANLatent
from .objective import AugClipObjective, batched_score


@dataclass
class OptimizeResult:
    latent: BigGANLatent
    """The best iterate (by the objective at its step), without latent noise."""
    image: torch.Tensor
    """``G(latent)`` as ``[1,3,H,W]`` in 0..1."""
    best_score: float
    """AugCLIP of ``image`` re-measured over ``score_draws`` fresh batches of views: the step's own single draw
    (``history[best_step - 1]``) was picked as the largest of up to ``steps`` noisy draws and overstates it."""
    best_step: int
    history: list[float] = field(default_factory=list)
    """The objective at every step (one batch of views each)."""


@dataclass
class Problem:
    """One independent optimisation: its basis latents, its objective (prompt) and its seed."""

    basis: BigGANLatent
    objective: AugClipObjective
    seed: int = 0


def optimize_basis(generator: BigGANGenerator, basis_latents: BigGANLatent, objective: AugClipObjective,
                   steps: int = 1000, lr: float = 5e-3, mode: str = "paper", latent_noise: float = 0.01,
                   optimize_y: bool = True, seed: int = 0, copies: int | None = None, score_draws: int = 4,
                   on_step: StepCallback | None = None) -> OptimizeResult:
    """Maximise eq. 4 with Adam; each step perturbs the latent by ``latent_noise``·N(0, I) (official code),
    clamps the basis z to [-2, 2], and keeps the best iterate (the official code returns the last), whose score is
    then re-measured over ``score_draws`` fresh batches of views."""
    return optimize_bases(generator, [Problem(basis_latents, objective, seed)], steps, lr, mode, latent_noise,
                          optimize_y, copies, score_draws, on_step)[0]


def optimize_bases(generator: BigGANGenerator, problems: list[Problem], steps: int = 1000, lr: float = 5e-3,
                   mode: str = "paper", latent_noise: float = 0.01, optimize_y: bool = True,
                   copies: int | None = None, score_draws: int = 4,
                   on_step: StepCallback | None = None) -> list[OptimizeResult]:
    """:func:`optimize_basis` for every problem at once, in one batched forward/backward per step (see the module
    docstring). ``on_step`` gets the best problem's score and image at each step."""
    require_positive("steps", steps)
    require_positive("score_draws", score_draws)
    require(bool(problems), "there are no problems to optimise.")
    truncation = problems[0].basis.truncation
    require(all(p.basis.truncation == truncation for p in problems),
            "problems optimised together must share one truncation; sample their latents with the same one.")
    rngs = [torch.Generator().manual_seed(int(p.seed)) for p in problems]
    device = generator.device
    objectives = [p.objective for p in problems]
    history: list[list[float]] = []
    best = [(-float("inf"), 0, None)] * len(problems)
    with grad_enabled():
        bases = [LatentBasis(p.basis.to(device), mode, optimize_y, rng) for p, rng in zip(problems, rngs)]
        optimizer = torch.optim.Adam([p for b in bases for p in b.parameters() if p.requires_grad], lr=lr)
        for step in range(1, steps + 1):
            latents = [b() for b in bases]
            z = torch.cat([zy[0] for zy in latents])
            y = torch.cat([zy[1] for zy in latents])
            if latent_noise > 0:
                noise = [(torch.randn(zi.shape, generator=rng), torch.randn(yi.shape, generator=rng))
                         for (zi, yi), rng in zip(latents, rngs)]
                z_in = z + latent_noise * torch.cat([n[0] for n in noise]).to(device)
                y_in = y + latent_noise * torch.cat([n[1] for n in noise]).to(device)
            else:
                z_in, y_in = z, y
            images = generator(z_in, y_in, truncation)
            scores = batched_score(objectives, images, rngs, copies)
            values = scores.detach().float().cpu().tolist()
            require_finite("the AugCLIP objective", sum(values))
            for i, value in enumerate(values):
                if value > best[i][0]:
                    best[i] = (value, step, BigGANLatent(z[i:i + 1].detach().clone(), y[i:i + 1].detach().clone(),
                                                         truncation))
            optimizer.zero_grad(set_to_none=True)
            (-scores.sum()).backward()
            optimizer.step()
            for b in bases:
                b.clamp_()
            history.append(values)
            shown = max(range(len(values)), key=values.__getitem__)
            report(on_step, step, steps, {"augclip": values[shown]}, images[shown:shown + 1])
    with no_grad_normal_tensors():
        final = generator.decode(BigGANLatent.cat([b[2] for b in best]))
        scores = [p.objective.mean_score(final[i:i + 1], score_draws, int(p.seed) + 1, copies).item()
                  for i, p in enumerate(problems)]
        final = final.cpu()
    return [OptimizeResult(b[2].to("cpu"), final[i:i + 1], scores[i], b[1], [h[i] for h in history])
            for i, b in enumerate(best)]
