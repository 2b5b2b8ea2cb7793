"""FuseDream-Composition (Sec. 3.3, Alg. 2): co-optimise a foreground and a background latent for a fused image.

For a cell ᾱ = (α, t) the two over-parameterised latents ξ̄ = {ξ̄_fg, ξ̄_bg} (eq. 4, :class:`LatentBasis`) solve the
bi-level problem (5)

    min ℓ_Fuse(ξ̄, ᾱ)  s.t.  ξ̄ ∈ argmax s_Fuse(ξ̄, ᾱ),
    s_Fuse = s_AugCLIP(T, Fuse(I_fg, I_bg, ᾱ)),   ℓ_Fuse = LPIPS(I_fg, Crop(I_bg, ᾱ)),

with Adam on the dynamic-barrier direction (6) (or the Appendix B alternatives). Alg. 2 then returns the cell of
the grid α ∈ {0.65, 0.5} × 9 positions whose composed image has the highest AugCLIP; the final image is the Poisson
blend of the foreground into the background.

Choices where the paper is silent: LPIPS compares I_fg at its own resolution with the background crop resized to
it; a cell's result is its best iterate by the AugCLIP of its step (as the single-image optimizer), ranked across
cells by AugCLIP averaged over ``score_draws`` batches of views, identical for every cell (common random numbers);
several cells can be optimised as one batch (independent problems: one λ per cell). Beyond the paper, the background
may be a fixed image (any size) instead of a generated one; then only the foreground latent is optimised.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .autograd import grad_enabled, no_grad_normal_tensors
from .basis import LatentBasis
from .biggan import BigGANGenerator
from .compose import PAPER_SCALES, POSITIONS, crop, foreground_layer, fuse, paste_mask, require_position, \
    require_scale, resize
from .dynamic_barrier import set_combined_grad_
from .errors import FuseDreamError, require, require_finite, require_positive
from .iterate_choice import DEFAULT_KEEP, DEFAULT_KEEP_TOLERANCE, KeptIterates, require_keep
from .latents import BigGANLatent
from .objective import AugClipObjective
from .perceptual import PerceptualDistance
from .poisson import poisson_blend
from .progress import Step, StepCallback, report


@dataclass(frozen=True)
class Cell:
    """One composition parameter ᾱ = (α, t)."""

    scale: float
    position: str

    def __post_init__(self):
        require_scale(self.scale)
        require_position(self.position)


def paper_grid() -> list[Cell]:
    """The 18 cells of the paper: α ∈ {0.65, 0.5} × t ∈ {left, center, right}²."""
    return [Cell(s, p) for s in PAPER_SCALES for p in POSITIONS]


def parse_grid(scales: str, positions: str) -> list[Cell]:
    """Cells from comma-separated scales (e.g. ``"0.65, 0.5"``) and positions (names, or ``all``)."""
    values = []
    for item in (scales or "").split(","):
        if item.strip():
            try:
                values.append(float(item))
            except ValueError:
                raise FuseDreamError(f"scales must be comma-separated numbers in (0, 1) like '0.65, 0.5', "
                                     f"got '{item.strip()}'.") from None
    require(bool(values), "scales is empty: give at least one scale in (0, 1), e.g. '0.65, 0.5'.")
    names = [p.strip() for p in (positions or "").split(",") if p.strip()]
    require(bool(names), f"positions is empty: write 'all' or some of {', '.join(POSITIONS)}.")
    if names == ["all"]:
        names = list(POSITIONS)
    cells = [Cell(s, p) for s in values for p in names]
    require(len(set(cells)) == len(cells), "the grid lists a cell twice; give each scale and position once.")
    return cells


def consistency_loss(perceptual: PerceptualDistance, foreground: torch.Tensor, background: torch.Tensor,
                     cells: list[Cell]) -> torch.Tensor:
    """ℓ_Fuse per cell: LPIPS(I_fg, Crop(I_bg, ᾱ)) with the crop resized to the foreground's size; ``[C]``."""
    size = tuple(foreground.shape[-2:])
    crops = torch.cat([resize(crop(background[i:i + 1], c.scale, c.position), size) for i, c in enumerate(cells)])
    return perceptual(foreground, crops)


def fuse_cells(foreground: torch.Tensor, background: torch.Tensor, cells: list[Cell]) -> torch.Tensor:
    """I_Fuse of every cell ``i`` from ``foreground[i]`` and ``background[i]``: ``[C,3,H,W]``."""
    return torch.cat([fuse(foreground[i:i + 1], background[i:i + 1], c.scale, c.position)
                      for i, c in enumerate(cells)])


def blend_cells(foreground: torch.Tensor, background: torch.Tensor, cells: list[Cell],
                max_iterations: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """The Poisson blend of every cell's scaled foreground into its background, and the paste masks."""
    h, w = background.shape[-2:]
    layers = torch.cat([foreground_layer(foreground[i:i + 1], h, w, c.scale, c.position)
                        for i, c in enumerate(cells)])
    masks = torch.cat([paste_mask(h, w, c.scale, c.position, background.device) for c in cells])
    return poisson_blend(layers, background, masks, max_iterations).clamp(0, 1), masks


@dataclass
class CompositionResult:
    """Per cell (batch dimension C): the best iterate's latents and images, and its scores."""

    cells: list[Cell]
    foreground_latent: BigGANLatent
    background_latent: BigGANLatent | None
    """None when the background was a fixed image."""
    foreground: torch.Tensor
    background: torch.Tensor
    fused: torch.Tensor
    blended: torch.Tensor
    masks: torch.Tensor
    augclip: torch.Tensor
    """AugCLIP of ``fused`` averaged over the same views for every cell: the ranking of Alg. 2."""
    lpips: torch.Tensor
    best_step: list[int]
    history: dict[str, torch.Tensor] = field(default_factory=dict)
    """``augclip``, ``lpips`` and ``lambda`` per step and cell: ``[steps, C]``."""

    @property
    def best(self) -> int:
        return int(self.augclip.argmax())

    @staticmethod
    def cat(results: list["CompositionResult"]) -> "CompositionResult":
        def cat(name):
            return torch.cat([getattr(r, name) for r in results])

        return CompositionResult(
            [c for r in results for c in r.cells],
            BigGANLatent.cat([r.foreground_latent for r in results]),
            None if results[0].background_latent is None
            else BigGANLatent.cat([r.background_latent for r in results]),
            cat("foreground"), cat("background"), cat("fused"), cat("blended"), cat("masks"), cat("augclip"),
            cat("lpips"), [s for r in results for s in r.best_step],
            {k: torch.cat([r.history[k] for r in results], dim=1) for k in results[0].history})


def _offset(on_step: StepCallback | None, offset: int, total: int) -> StepCallback | None:
    if on_step is None:
        return None
    return lambda step: on_step(Step(step.step + offset, total, step.values, step.image))


def optimize_composition(generator: BigGANGenerator, foreground: BigGANLatent, background: BigGANLatent | torch.Tensor,
                         objective: AugClipObjective, perceptual: PerceptualDistance, cells: list[Cell],
                         steps: int = 1000, lr: float = 5e-3, method: str = "bilevel", beta: float = 1.0,
                         weight: float = 0.5, mode: str = "paper", latent_noise: float = 0.01,
                         optimize_y: bool = True, seed: int = 0, copies: int | None = None, score_draws: int = 4,
                         blend_iterations: int = 5000, keep: str = DEFAULT_KEEP,
                         keep_tolerance: float = DEFAULT_KEEP_TOLERANCE,
                         on_step: StepCallback | None = None) -> CompositionResult:
    """Solve (5) for every cell in ``cells`` (one batch, independent problems) from the bases ``foreground`` and
    ``background``; see the module docstring. ``background`` may instead be a fixed image ``[1,3,H,W]`` in 0..1
    (any size; it sets the output size): then only the foreground latent moves. ``keep`` and ``keep_tolerance``
    choose which iterate each cell returns (:mod:`~fusedream_ops.iterate_choice`). ``on_step`` gets the fused
    image and ``augclip``/``lpips`` of the cell with the highest AugCLIP at that step."""
    require_positive("steps", steps)
    require_keep(keep, keep_tolerance)
    require(bool(cells), "there are no cells (scale, position) to optimise.")
    fixed_background = None
    if isinstance(background, torch.Tensor):
        require(background.ndim == 4 and background.shape[:2] == (1, 3),
                f"a background image must be one RGB image [1,3,H,W], got shape {tuple(background.shape)}.")
        fixed_background = background.to(generator.device).float()
    else:
        require(foreground.truncation == background.truncation,
                f"foreground and background latents have different truncation ({foreground.truncation} vs "
                f"{background.truncation}); sample them with the same truncation.")
    require(score_draws >= 1, f"score_draws must be at least 1, got {score_draws}.")
    rng = torch.Generator().manual_seed(int(seed))
    device = generator.device
    n = len(cells)
    truncation = foreground.truncation
    history = {"augclip": [], "lpips": [], "lambda": []}
    kept = [KeptIterates(keep, keep_tolerance) for _ in cells]
    with grad_enabled():
        fg_bases = [LatentBasis(foreground.to(device), mode, optimize_y, rng) for _ in cells]
        bg_bases = [] if fixed_background is not None else \
            [LatentBasis(background.to(device), mode, optimize_y, rng) for _ in cells]
        bases = fg_bases + bg_bases
        cell_bases = [[f, g] for f, g in zip(fg_bases, bg_bases)] or [[f] for f in fg_bases]
        groups = [[p for b in pair for p in b.parameters() if p.requires_grad] for pair in cell_bases]
        rows = 2 if fixed_background is None else 1
        optimizer = torch.optim.Adam([p for group in groups for p in group], lr=lr)
        for step in range(1, steps + 1):
            latents = [b() for b in bases]
            z = torch.cat([l[0] for l in latents])
            y = torch.cat([l[1] for l in latents])
            z_in, y_in = z, y
            if latent_noise > 0:
                z_in = z + latent_noise * torch.randn(z.shape, generator=rng).to(device)
                y_in = y + latent_noise * torch.randn(y.shape, generator=rng).to(device)
            images = generator(z_in, y_in, truncation)
            fg, bg = images[:n], images[n:] if fixed_background is None else fixed_background.expand(n, -1, -1, -1)
            fused = fuse_cells(fg, bg, cells)
            score = objective.score(fused, rng, copies)
            loss = consistency_loss(perceptual, fg, bg, cells)
            scores, losses = score.detach().float().cpu(), loss.detach().float().cpu()
            require_finite("the AugCLIP objective", scores.sum())
            require_finite("the LPIPS loss", losses.sum())
            for i, cell_kept in enumerate(kept):
                rows_i = slice(i, None, n)  # the cell's foreground row, then its background row
                cell_kept.offer(step, scores[i].item(), losses[i].item(),
                                lambda: (z[rows_i].detach().cpu().clone(), y[rows_i].detach().cpu().clone()))
            optimizer.zero_grad(set_to_none=True)
            lambdas = set_combined_grad_(groups, score.sum(), loss.sum(), method, beta, weight)
            optimizer.step()
            for b in bases:
                b.clamp_()
            history["augclip"].append(scores)
            history["lpips"].append(losses)
            history["lambda"].append(lambdas.float().cpu())
            shown = int(scores.argmax())
            report(on_step, step, steps, {"augclip": scores[shown].item(), "lpips": losses[shown].item()},
                   fused[shown:shown + 1])
    chosen = [k.choice() for k in kept]
    best_step = [c.step for c in chosen]
    best_z = torch.cat([c.latent[0] for c in chosen]).view(n, rows, -1).transpose(0, 1).reshape(n * rows, -1)
    best_y = torch.cat([c.latent[1] for c in chosen]).view(n, rows, -1).transpose(0, 1).reshape(n * rows, -1)
    with no_grad_normal_tensors():
        best = BigGANLatent(best_z, best_y, truncation)
        images = generator.decode(best)
        fg, bg = images[:n], images[n:] if fixed_background is None else fixed_background.expand(n, -1, -1, -1)
        fused = fuse_cells(fg, bg, cells)
        blended, masks = blend_cells(fg, bg, cells, blend_iterations)
        final_scores = torch.cat([objective.mean_score(fused[i:i + 1], score_draws, seed, copies) for i in range(n)])
        final_losses = consistency_loss(perceptual, fg, bg, cells)
    return CompositionResult(
        list(cells), best.select(slice(0, n)), None if fixed_background is not None else best.select(slice(n, 2 * n)),
        fg.cpu(), bg.cpu(), fused.cpu(), blended.cpu(), masks.cpu(), final_scores.float().cpu(),
        final_losses.float().cpu(), best_step, {k: torch.stack(v) for k, v in history.items()})


def composition_grid_search(generator: BigGANGenerator, foreground: BigGANLatent,
                            background: BigGANLatent | torch.Tensor,
                            objective: AugClipObjective, perceptual: PerceptualDistance,
                            cells: list[Cell] | None = None, cells_per_batch: int = 1, steps: int = 1000,
                            on_step: StepCallback | None = None, **options) -> CompositionResult:
    """Alg. 2: :func:`optimize_composition` for every cell (default: the paper's 18), ``cells_per_batch`` at a time,
    each from the same initial bases and seed; ``result.best`` is the cell with the highest AugCLIP and every
    candidate stays in the batch. Progress runs over all cells: ``steps × number of batches`` steps."""
    cells = paper_grid() if cells is None else list(cells)
    require(bool(cells), "the grid has no cells.")
    require_positive("cells_per_batch", cells_per_batch)
    require_positive("steps", steps)
    chunks = [cells[i:i + cells_per_batch] for i in range(0, len(cells), cells_per_batch)]
    total = steps * len(chunks)
    results = [optimize_composition(generator, foreground, background, objective, perceptual, chunk, steps=steps,
                                    on_step=_offset(on_step, i * steps, total), **options)
               for i, chunk in enumerate(chunks)]
    return CompositionResult.cat(results)
