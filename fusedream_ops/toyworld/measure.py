"""The paper claims as numbers on the toy world, using the pack's own ops.

Generation (FuseDream Fig. 3–4): for fixed captions and seeds, the judge verifies each result (every
attribute right, nothing extra) and AugCLIP is re-measured with fresh augmentation draws:

- ``naive``: one random latent, plain CLIP cosine, Adam on (z, y) — the CLIP+GAN baseline of eq. 2;
- ``augclip``: the same start, AugCLIP (eq. 3) instead of CLIP;
- ``fusedream``: top-k of M random latents, then AugCLIP over the over-parameterised basis (eq. 4, Alg. 1);
- ``best_of_m``: the same M latents, the one plain CLIP scores highest, no optimisation (search only);
- ``topk_mean``: the same top-k, decoded at FuseDream's starting point (the basis mean), no optimisation.

Adversarial check (Fig. 2): one FGSM step of fixed L∞ size on world images, towards a caption that does NOT
describe them, raises the attacked score; plain CLIP is attacked through its own gradient and AugCLIP through
the gradient of its augmented average (re-measured with fresh draws).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..core.autograd import grad_enabled, no_grad_normal_tensors
from ..core.errors import FuseDreamError
from ..fusedream.augment import AugmentPolicy, diff_augment
from ..fusedream.basis import LatentBasis
from ..fusedream.latents import sample_latents
from ..fusedream.objective import AugClipObjective
from ..fusedream.optimize import optimize_basis
from ..fusedream.topk import topk_latents
from ..models.biggan import BigGANGenerator, load_biggan
from ..models.clip import ClipScorer, load_clip
from ..toyworld import world
from .build import BIGGAN_PATH, CLIP_PATH, JUDGE_PATH, ROBUST_CLIP_PATH, load_judge
from .judge import Judge
from .run_measures import RunMeasures, mean_of

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "tests", "fixtures", "toyworld")
PLAIN_CLIP = AugmentPolicy(color=False, translation=False, resize=False, cutout=False)
METHODS = ("naive", "augclip", "fusedream")
SEARCH_ONLY = ("best_of_m", "topk_mean")


@dataclass
class ToyWorld:
    scorer: ClipScorer
    generator: BigGANGenerator
    judge: Judge
    robust_scorer: ClipScorer | None = None
    """The tiny CLIP after the pack's CLIPAG adversarial fine-tuning, when the fixtures hold it."""


def load_toyworld(models_dir: str = FIXTURES) -> ToyWorld:
    """The tiny CLIP, generator and judge (and robust CLIP, if built) through the pack's own loaders."""
    robust = os.path.join(models_dir, ROBUST_CLIP_PATH)
    return ToyWorld(load_clip("auto", os.path.join(models_dir, CLIP_PATH)),
                    load_biggan(os.path.join(models_dir, BIGGAN_PATH)),
                    load_judge(os.path.join(models_dir, JUDGE_PATH)),
                    load_clip("auto", robust) if os.path.isfile(robust) else None)


@dataclass(frozen=True)
class Budget:
    """Small versions of the paper's settings (M = 10,000, k = 5, 1000 Adam steps at lr 5e-3, 50 copies)."""

    steps: int = 60
    lr: float = 0.05
    candidates: int = 256
    k: int = 5
    copies: int = 16
    eval_copies: int = 64


def evaluation_captions(count: int, seed: int = 2024) -> list[tuple[str, torch.Tensor]]:
    """``count`` single-object captions with position, cycling through the 16 classes, cells drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(world.NUM_CELLS, (count,), generator=g)
    order = torch.randperm(world.NUM_CLASSES, generator=g)
    out = []
    for i in range(count):
        klass, cell = int(order[i % world.NUM_CLASSES]), int(cells[i])
        labels = torch.zeros(world.NUM_CELLS, dtype=torch.long)
        labels[cell] = klass + 1
        out.append((world.object_phrase(klass, cell), labels))
    return out


def generate(tw: ToyWorld, caption: str, method: str, seed: int, budget: Budget) -> torch.Tensor:
    """One image ``[1,3,H,W]`` for ``caption`` by ``method`` (see the module docstring)."""
    augclip = AugClipObjective(tw.scorer, [(caption, 1.0)], AugmentPolicy(), copies=budget.copies)
    if method in ("fusedream",) + SEARCH_ONLY:
        candidates = sample_latents(tw.generator, budget.candidates, seed)
        basis, _ = topk_latents(tw.generator, candidates, augclip, budget.k, chunk=64, seed=seed)
        if method == "best_of_m":
            with no_grad_normal_tensors():
                return tw.generator.decode(basis.select(slice(0, 1))).cpu()
        if method == "topk_mean":
            with no_grad_normal_tensors():
                return tw.generator.decode(LatentBasis(basis).latent()).cpu()
        result = optimize_basis(tw.generator, basis, augclip, steps=budget.steps, lr=budget.lr, seed=seed)
    else:
        start = sample_latents(tw.generator, 1, seed)
        if method == "naive":
            plain = AugClipObjective(tw.scorer, [(caption, 1.0)], PLAIN_CLIP, copies=1)
            result = optimize_basis(tw.generator, start, plain, steps=budget.steps, lr=budget.lr,
                                    latent_noise=0.0, seed=seed)
        elif method == "augclip":
            result = optimize_basis(tw.generator, start, augclip, steps=budget.steps, lr=budget.lr, seed=seed)
        else:
            raise FuseDreamError(f"method must be one of {', '.join(METHODS + SEARCH_ONLY)}, got '{method}'.")
    return result.image


class MethodScores(RunMeasures):
    NO_RUNS = 0.0
    """A measure of no runs reads 0, not NaN."""
    successes: list[bool]
    """The judge reads exactly the caption: right shape, colour and cell, nothing else."""
    colour_and_cell: list[bool]
    """The judge finds one object of the caption's colour in the caption's cell (shape not checked)."""
    augclip: list[float]
    clip: list[float]

    success_rate = mean_of("successes")
    colour_and_cell_rate = mean_of("colour_and_cell")
    mean_augclip = mean_of("augclip")
    mean_clip = mean_of("clip")


def judge_verdicts(judge: Judge, image: torch.Tensor, labels: torch.Tensor) -> tuple[bool, bool]:
    """(every attribute right, colour and cell right) for one image and its caption's labels ``[9]``."""
    read = judge.read(image)[0]
    colours = len(world.COLOURS)
    found = (read > 0) & (labels > 0) & ((read - 1) % colours == (labels - 1) % colours)
    return bool((read == labels).all()), bool(found.any() and int((read > 0).sum()) == 1)


def _record(scores: MethodScores, judge: Judge, evaluator: AugClipObjective, image: torch.Tensor,
            labels: torch.Tensor, seed: int) -> None:
    """The judge's verdicts on one result, and its AugCLIP (fresh views, drawn from ``seed``) and plain CLIP."""
    with no_grad_normal_tensors():
        exact, partial = judge_verdicts(judge, image, labels)
        scores.successes.append(exact)
        scores.colour_and_cell.append(partial)
        scores.augclip.append(evaluator.mean_score(image, draws=2, seed=10_000 + seed).item())
        scores.clip.append(evaluator.cosine(image).item())


def compare_generation(tw: ToyWorld, captions: list[tuple[str, torch.Tensor]], seeds: list[int],
                       budget: Budget = Budget(), methods=METHODS) -> dict[str, MethodScores]:
    """Judge-verified success and re-measured AugCLIP / CLIP of every method on every (caption, seed)."""
    scores = {m: MethodScores() for m in methods}
    for caption, labels in captions:
        evaluator = AugClipObjective(tw.scorer, [(caption, 1.0)], AugmentPolicy(), copies=budget.eval_copies)
        for seed in seeds:
            for method in methods:
                image = generate(tw, caption, method, seed, budget)
                _record(scores[method], tw.judge, evaluator, image, labels, seed)
    return scores


@dataclass
class AttackResult:
    eps: float
    clip_gain: float
    """Mean rise of plain CLIP (wrong caption) under FGSM on plain CLIP."""
    augclip_gain: float
    """Mean rise of AugCLIP (wrong caption, fresh draws) under FGSM on AugCLIP."""
    augclip_gain_under_clip_attack: float
    """Mean rise of AugCLIP when the plain-CLIP attack is applied (transfer)."""
    judge_unchanged: float
    """Fraction of attacked images the judge still reads as the original scene."""


def _pair_scores(scorer: ClipScorer, images: torch.Tensor, text: torch.Tensor, copies: int,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Cosine of image i with text i; averaged over ``copies`` DiffAugment views when ``copies`` > 0."""
    if copies == 0:
        return (scorer.encode_images(images) * text).sum(-1)
    views = diff_augment(images.repeat_interleave(copies, 0), AugmentPolicy(), generator)
    return (scorer.encode_images(views) * text.repeat_interleave(copies, 0)).sum(-1).view(-1, copies).mean(1)


def fgsm_check(tw: ToyWorld, count: int = 64, eps: float = 4 / 255, seed: int = 31, copies: int = 16,
               eval_copies: int = 64) -> AttackResult:
    """One FGSM step x + ε·sign(∇s) towards a wrong caption, for s = CLIP and s = AugCLIP."""
    scenes = world.sample_scenes(count, seed)
    g = torch.Generator().manual_seed(seed)
    wrong = []
    for labels in scenes.labels:
        while True:
            other = torch.zeros_like(labels)
            other[int(torch.randint(world.NUM_CELLS, (1,), generator=g))] = int(
                torch.randint(world.NUM_CLASSES, (1,), generator=g)) + 1
            if not torch.equal(other, labels):
                break
        wrong.append(world.caption_for(other))
    text = tw.scorer.encode_text(wrong)

    def fgsm(copies_used: int) -> torch.Tensor:
        with grad_enabled():
            x = scenes.images.clone().requires_grad_(True)
            score = _pair_scores(tw.scorer, x, text, copies_used, torch.Generator().manual_seed(seed + 1)).sum()
            (grad,) = torch.autograd.grad(score, x)
        return (scenes.images + eps * grad.sign()).clamp(0, 1)

    def measure(images: torch.Tensor, copies_used: int) -> torch.Tensor:
        with no_grad_normal_tensors():
            return _pair_scores(tw.scorer, images, text, copies_used, torch.Generator().manual_seed(seed + 2))

    clip_attacked, aug_attacked = fgsm(0), fgsm(copies)
    clean_clip, clean_aug = measure(scenes.images, 0), measure(scenes.images, eval_copies)
    unchanged = (tw.judge.read(clip_attacked) == scenes.labels).all(-1).float().mean().item()
    return AttackResult(
        eps,
        (measure(clip_attacked, 0) - clean_clip).mean().item(),
        (measure(aug_attacked, eval_copies) - clean_aug).mean().item(),
        (measure(clip_attacked, eval_copies) - clean_aug).mean().item(),
        unchanged,
    )


def compare_pixel_synthesis(tw: ToyWorld, captions: list[tuple[str, torch.Tensor]], seeds: list[int],
                            steps: int = 60, views: int = 16, patches: int = 8,
                            init_candidates: int = 64) -> dict[str, MethodScores]:
    """CLIPAG's generator-free synthesis guided by the plain and by the robust tiny CLIP.

    As in the CLIPAG notebook, the start is the sample the guide likes best among ``init_candidates`` draws of
    per-class Gaussians of 16×16 reference images (here: single-object world scenes, one class per shape ×
    colour). Every result is judged, and scored by the PLAIN CLIP's AugCLIP so both guides face one evaluator.
    """
    from ..clipag.init_images import SmallImageGaussians, best_gaussian_samples
    from ..clipag.synthesis import PixelSynthesisSettings, synthesize_pixels

    reference = world.sample_scenes(16 * 64, 77)
    klass = reference.labels.max(-1).values - 1
    gaussians = SmallImageGaussians.fit([reference.images[klass == c] for c in range(world.NUM_CLASSES)])

    guides = {"plain": tw.scorer, "robust": tw.robust_scorer}
    scores = {name: MethodScores() for name, scorer in guides.items() if scorer is not None}
    for caption, labels in captions:
        evaluator = AugClipObjective(tw.scorer, [(caption, 1.0)], AugmentPolicy(), copies=64)
        for seed in seeds:
            for name in scores:
                objective = AugClipObjective(guides[name], [(caption, 1.0)], AugmentPolicy(signed_range=False))
                init = best_gaussian_samples(objective, gaussians, init_candidates, world.IMAGE_SIZE, 1, seed)
                settings = PixelSynthesisSettings(steps=steps, views=views, patches=patches, seed=seed)
                image = synthesize_pixels(objective, init, settings).image
                _record(scores[name], tw.judge, evaluator, image, labels, seed)
    return scores
