"""FuseDream's optimisation (Alg. 1, line 3): maximise AugCLIP over the over-parameterised basis with Adam."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .autograd import grad_enabled, no_grad_normal_tensors
from .basis import LatentBasis
from .biggan import BigGANGenerator
from .errors import require_finite, require_positive
from .latents import BigGANLatent
from .objective import AugClipObjective
from .progress import StepCallback, report


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


def optimize_basis(generator: BigGANGenerator, basis_latents: BigGANLatent, objective: AugClipObjective,
                   steps: int = 1000, lr: float = 5e-3, mode: str = "paper", latent_noise: float = 0.01,
                   optimize_y: bool = True, seed: int = 0, copies: int | None = None, score_draws: int = 4,
                   on_step: StepCallback | None = None) -> OptimizeResult:
    """Maximise eq. 4 with Adam; each step perturbs the latent by ``latent_noise``·N(0, I) (official code),
    clamps the basis z to [-2, 2], and keeps the best iterate (the official code returns the last), whose score is
    then re-measured over ``score_draws`` fresh batches of views."""
    require_positive("steps", steps)
    require_positive("score_draws", score_draws)
    rng = torch.Generator().manual_seed(int(seed))
    device = generator.device
    history: list[float] = []
    best = (-float("inf"), 0, None)
    with grad_enabled():
        basis = LatentBasis(basis_latents.to(device), mode, optimize_y, rng)
        optimizer = torch.optim.Adam([p for p in basis.parameters() if p.requires_grad], lr=lr)
        for step in range(1, steps + 1):
            z, y = basis()
            if latent_noise > 0:
                z_in = z + latent_noise * torch.randn(z.shape, generator=rng).to(device)
                y_in = y + latent_noise * torch.randn(y.shape, generator=rng).to(device)
            else:
                z_in, y_in = z, y
            image = generator(z_in, y_in, basis.truncation)
            score = objective.score(image, rng, copies)[0]
            value = score.item()
            require_finite("the AugCLIP objective", value)
            if value > best[0]:
                best = (value, step, BigGANLatent(z.detach().cpu(), y.detach().cpu(), basis.truncation))
            optimizer.zero_grad(set_to_none=True)
            (-score).backward()
            optimizer.step()
            basis.clamp_()
            history.append(value)
            report(on_step, step, steps, {"augclip": value}, image)
    with no_grad_normal_tensors():
        image = generator.decode(best[2])
        score = objective.mean_score(image, score_draws, seed + 1, copies).item()
    return OptimizeResult(best[2], image.cpu(), score, best[1], history)
