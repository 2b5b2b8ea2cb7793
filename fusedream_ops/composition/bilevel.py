"""FuseDream-Composition (Sec. 3.3, Alg. 2): co-optimise a foreground and a background latent for a fused image.

For a cell ᾱ = (α, t) the two over-parameterised latents ξ̄ = {ξ̄_fg, ξ̄_bg} (eq. 4, :class:`LatentBasis`) solve the
bi-level problem (5)

    min ℓ_Fuse(ξ̄, ᾱ)  s.t.  ξ̄ ∈ argmax s_Fuse(ξ̄, ᾱ),
    s_Fuse = s_AugCLIP(T, Fuse(I_fg, I_bg, ᾱ)),   ℓ_Fuse = LPIPS(I_fg, Crop(I_bg, ᾱ)),

with Adam on the dynamic-barrier direction (6) (or the Appendix B alternatives). Alg. 2 then returns the cell of
the grid α ∈ {0.65, 0.5} × 9 positions whose composed image has the highest AugCLIP; the final image is the Poisson
blend of the foreground into the background.

Choices where the paper is silent: LPIPS compares I_fg at its own resolution with the background crop resized to
it; a cell's result is the iterate ``keep`` names (:mod:`.iterate_choice`; by default the best AugCLIP draw of its
step, as the single-image optimizer), ranked across
cells by AugCLIP averaged over ``score_draws`` batches of views, identical for every cell (common random numbers);
several problems (bases, background, prompt, seed) × cells can be optimised as one batch of independent runs (one λ
and one seeded random generator per run, so each reproduces its run alone). Beyond the paper, the background may be
a fixed image (any size) instead of a generated one; then only the foreground latent is optimised.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.autograd import grad_enabled, no_grad_normal_tensors
from ..core.errors import FuseDreamError, require, require_finite, require_positive
from ..core.progress import Step, StepCallback, report
from ..fusedream.basis import LatentBasis
from ..fusedream.latents import BigGANLatent
from ..fusedream.objective import AugClipObjective, batched_score
from ..models.biggan import BigGANGenerator
from ..models.lpips import PerceptualDistance
from .dynamic_barrier import set_combined_grad_
from .geometry import (PAPER_SCALES, POSITIONS, crop, foreground_layer, fuse, paste_mask, require_position,
                       require_scale, resize)
from .iterate_choice import DEFAULT_KEEP, DEFAULT_KEEP_TOLERANCE, KeptIterates, require_keep
from .poisson import poisson_blend


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

    def select(self, cells: slice) -> "CompositionResult":
        """The result of the cells in ``cells`` (a slice of the cell list)."""
        def pick(name):
            return getattr(self, name)[cells]

        return CompositionResult(
            self.cells[cells], self.foreground_latent.select(cells),
            None if self.background_latent is None else self.background_latent.select(cells),
            pick("foreground"), pick("background"), pick("fused"), pick("blended"), pick("masks"), pick("augclip"),
            pick("lpips"), self.best_step[cells], {k: v[:, cells] for k, v in self.history.items()})

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


@dataclass
class CompositionProblem:
    """One independent composition: its foreground basis, its background (basis latents to optimise with it, or a
    fixed image ``[1,3,H,W]`` in 0..1), its objective (prompt) and its seed."""

    foreground: BigGANLatent
    background: BigGANLatent | torch.Tensor
    objective: AugClipObjective
    seed: int = 0

    @property
    def fixed_background(self) -> bool:
        return isinstance(self.background, torch.Tensor)


def _require_problems(problems: list[CompositionProblem], cells: list[Cell]) -> None:
    """Everything that would make a batch of problems fail half-way, checked before any model runs."""
    require(bool(problems), "there are no problems to optimise.")
    require(bool(cells), "there are no cells (scale, position) to optimise.")
    for p in problems:
        if p.fixed_background:
            require(p.background.ndim == 4 and tuple(p.background.shape[:2]) == (1, 3),
                    f"a background image must be one RGB image [1,3,H,W], got shape {tuple(p.background.shape)}.")
        else:
            require(p.foreground.truncation == p.background.truncation,
                    f"foreground and background latents have different truncation ({p.foreground.truncation} vs "
                    f"{p.background.truncation}); sample them with the same truncation.")
    require(len({p.foreground.truncation for p in problems}) == 1,
            "problems optimised together must share one truncation; sample their latents with the same one.")
    sizes = {tuple(p.background.shape[-2:]) if p.fixed_background else None for p in problems}
    require(len(sizes) == 1, "problems optimised together must all generate their backgrounds or all use fixed "
                             "background images of one size.")
    scorer = problems[0].objective.scorer
    require(all(p.objective.scorer is scorer for p in problems), "problems optimised together must share one CLIP "
                                                                 "model.")


def optimize_composition(generator: BigGANGenerator, foreground: BigGANLatent, background: BigGANLatent | torch.Tensor,
                         objective: AugClipObjective, perceptual: PerceptualDistance, cells: list[Cell],
                         steps: int = 1000, seed: int = 0, on_step: StepCallback | None = None,
                         **options) -> CompositionResult:
    """Solve (5) for every cell in ``cells`` (one batch, independent problems) from the bases ``foreground`` and
    ``background``; see the module docstring and :func:`optimize_compositions` for the options. ``background``
    may instead be a fixed image ``[1,3,H,W]`` in 0..1 (any size; it sets the output size): then only the
    foreground latent moves."""
    return optimize_compositions(generator, [CompositionProblem(foreground, background, objective, seed)],
                                 perceptual, cells, steps, on_step=on_step, **options)[0]


def optimize_compositions(generator: BigGANGenerator, problems: list[CompositionProblem],
                          perceptual: PerceptualDistance, cells: list[Cell], steps: int = 1000, lr: float = 5e-3,
                          method: str = "bilevel", beta: float = 1.0, weight: float = 0.5, mode: str = "paper",
                          latent_noise: float = 0.01, optimize_y: bool = True, copies: int | None = None,
                          score_draws: int = 4, blend_iterations: int = 5000, keep: str = DEFAULT_KEEP,
                          keep_tolerance: float = DEFAULT_KEEP_TOLERANCE,
                          on_step: StepCallback | None = None) -> list[CompositionResult]:
    """Solve (5) for every problem × cell, all in one generator batch, one CLIP batch, one LPIPS batch and one
    backward per step; one result per problem, its cells in ``cells`` order.

    Every (problem, cell) run is independent: its own bases, its own λ, and its own random generator seeded with
    the problem's seed, from which it draws (in this order) its basis weights in ``official`` mode, then at each
    step its latent noise and its augmented views. Adam is element-wise, so each run gives what it gives alone (up
    to the rounding of batched kernels), whatever else is in the batch; the cells of one problem see the same
    random draws (common random numbers). ``keep``/``keep_tolerance`` choose which iterate each run returns
    (:mod:`~fusedream_ops.composition.iterate_choice`); each result is then scored over ``score_draws`` batches of views drawn
    from the problem's seed, the same for all its cells. ``on_step`` gets the fused image and ``augclip``/``lpips``
    of the run with the highest AugCLIP at that step."""
    require_positive("steps", steps)
    require(score_draws >= 1, f"score_draws must be at least 1, got {score_draws}.")
    require_keep(keep, keep_tolerance)
    cells = list(cells)
    _require_problems(problems, cells)
    runs = [(p, c) for p in problems for c in cells]
    device = generator.device
    truncation = problems[0].foreground.truncation
    rngs = [torch.Generator().manual_seed(int(p.seed)) for p, _ in runs]
    kept = [KeptIterates(keep, keep_tolerance) for _ in runs]
    fixed = [p.background.to(device).float() if p.fixed_background else None for p, _ in runs]
    rows = [1 if f is not None else 2 for f in fixed]
    starts = [sum(rows[:i]) for i in range(len(runs))]  # generator batch: run r's foreground, then its background
    run_cells = [c for _, c in runs]
    history = {"augclip": [], "lpips": [], "lambda": []}
    with grad_enabled():
        bases = []
        for (p, _), rng, f in zip(runs, rngs, fixed):
            bases.append([LatentBasis(p.foreground.to(device), mode, optimize_y, rng)] +
                         ([] if f is not None else [LatentBasis(p.background.to(device), mode, optimize_y, rng)]))
        groups = [[w for b in pair for w in b.parameters() if w.requires_grad] for pair in bases]
        optimizer = torch.optim.Adam([w for group in groups for w in group], lr=lr)
        for step in range(1, steps + 1):
            latents = [[b() for b in pair] for pair in bases]
            zs = [torch.cat([zy[0] for zy in pair]) for pair in latents]
            ys = [torch.cat([zy[1] for zy in pair]) for pair in latents]
            z, y = torch.cat(zs), torch.cat(ys)
            if latent_noise > 0:
                noise = [(torch.randn(zi.shape, generator=rng), torch.randn(yi.shape, generator=rng))
                         for zi, yi, rng in zip(zs, ys, rngs)]
                z_in = z + latent_noise * torch.cat([n[0] for n in noise]).to(device)
                y_in = y + latent_noise * torch.cat([n[1] for n in noise]).to(device)
            else:
                z_in, y_in = z, y
            images = generator(z_in, y_in, truncation)
            fg = images[starts]
            bg = torch.cat([f if f is not None else images[s + 1:s + 2] for f, s in zip(fixed, starts)])
            fused = fuse_cells(fg, bg, run_cells)
            score = batched_score([p.objective for p, _ in runs], fused, rngs, copies)
            loss = consistency_loss(perceptual, fg, bg, run_cells)
            scores, losses = score.detach().float().cpu(), loss.detach().float().cpu()
            require_finite("the AugCLIP objective", scores.sum())
            require_finite("the LPIPS loss", losses.sum())
            for r, run_kept in enumerate(kept):
                run_kept.offer(step, scores[r].item(), losses[r].item(),
                               lambda: (zs[r].detach().cpu().clone(), ys[r].detach().cpu().clone()))
            optimizer.zero_grad(set_to_none=True)
            lambdas = set_combined_grad_(groups, score.sum(), loss.sum(), method, beta, weight)
            optimizer.step()
            for pair in bases:
                for b in pair:
                    b.clamp_()
            history["augclip"].append(scores)
            history["lpips"].append(losses)
            history["lambda"].append(lambdas.float().cpu())
            shown = int(scores.argmax())
            report(on_step, step, steps, {"augclip": scores[shown].item(), "lpips": losses[shown].item()},
                   fused[shown:shown + 1])
    chosen = [k.choice() for k in kept]
    with no_grad_normal_tensors():
        best = BigGANLatent(torch.cat([c.latent[0] for c in chosen]), torch.cat([c.latent[1] for c in chosen]),
                            truncation)
        images = generator.decode(best)
        fg = images[starts]
        bg = torch.cat([f if f is not None else images[s + 1:s + 2] for f, s in zip(fixed, starts)])
        fused = fuse_cells(fg, bg, run_cells)
        blended, masks = blend_cells(fg, bg, run_cells, blend_iterations)
        final_scores = torch.cat([p.objective.mean_score(fused[r:r + 1], score_draws, p.seed, copies)
                                  for r, (p, _) in enumerate(runs)]).float().cpu()
        final_losses = consistency_loss(perceptual, fg, bg, run_cells).float().cpu()
    history = {k: torch.stack(v) for k, v in history.items()}
    fg, bg, fused, blended, masks = fg.cpu(), bg.cpu(), fused.cpu(), blended.cpu(), masks.cpu()
    results, n = [], len(cells)
    for i, p in enumerate(problems):
        mine = slice(i * n, (i + 1) * n)
        fg_rows = starts[mine]
        results.append(CompositionResult(
            list(cells), best.select(fg_rows),
            None if p.fixed_background else best.select([s + 1 for s in fg_rows]),
            fg[mine], bg[mine], fused[mine], blended[mine], masks[mine], final_scores[mine], final_losses[mine],
            [c.step for c in chosen[mine]], {k: v[:, mine] for k, v in history.items()}))
    return results


def composition_grid_search(generator: BigGANGenerator, foreground: BigGANLatent,
                            background: BigGANLatent | torch.Tensor,
                            objective: AugClipObjective, perceptual: PerceptualDistance,
                            cells: list[Cell] | None = None, cells_per_batch: int = 1, steps: int = 1000,
                            seed: int = 0, on_step: StepCallback | None = None, **options) -> CompositionResult:
    """Alg. 2: :func:`optimize_composition` for every cell (default: the paper's 18), ``cells_per_batch`` at a time,
    each from the same initial bases and seed; ``result.best`` is the cell with the highest AugCLIP and every
    candidate stays in the batch. Progress runs over all cells: ``steps × number of batches`` steps."""
    return composition_grid_searches(generator, [CompositionProblem(foreground, background, objective, seed)],
                                     perceptual, cells, cells_per_batch, steps, on_step, **options)[0]


def composition_grid_searches(generator: BigGANGenerator, problems: list[CompositionProblem],
                              perceptual: PerceptualDistance, cells: list[Cell] | None = None,
                              cells_per_batch: int = 1, steps: int = 1000, on_step: StepCallback | None = None,
                              **options) -> list[CompositionResult]:
    """:func:`composition_grid_search` for every problem: each step batch holds every problem × ``cells_per_batch``
    cells (:func:`optimize_compositions`). Each cell of each problem gives what :func:`optimize_composition` gives
    for that cell alone (up to batched-kernel rounding), whatever ``cells_per_batch`` and the other problems are;
    one result per problem, with all its cells (``result.best``: its best cell)."""
    cells = paper_grid() if cells is None else list(cells)
    require(bool(cells), "the grid has no cells.")
    require_positive("cells_per_batch", cells_per_batch)
    require_positive("steps", steps)
    _require_problems(problems, cells)
    chunks = [cells[i:i + cells_per_batch] for i in range(0, len(cells), cells_per_batch)]
    total = steps * len(chunks)
    parts = [optimize_compositions(generator, problems, perceptual, chunk, steps,
                                   on_step=_offset(on_step, i * steps, total), **options)
             for i, chunk in enumerate(chunks)]
    return [CompositionResult.cat([part[i] for part in parts]) for i in range(len(problems))]
