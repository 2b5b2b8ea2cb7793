"""OVI's claims on the toy world, through the pack's Kandinsky loaders, OVI op, reference statistics and decoder.

For held-out captions and fixed seeds every method yields an image embedding, which is scored three ways
(cosine to the caption's text embedding; Mahalanobis distance and nearest-reference cosine to real world
scenes' embeddings, the statistics the constraints use) and decoded by the toy decoder; the independent judge
reads the decoded image, and the toy CLIP's text–image cosine of that image is the "benchmark" alignment score.

Methods (OVI Fig. 2, 4, 5): ``textemb`` (the text embedding itself), ``ovi`` with 1 and several tokens (no
constraint), ``mahalanobis`` (λ_M), ``nearest`` (λ_N), and ``real`` (the image embedding of a real world scene with
that caption: the trained-prior upper bound).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..toyworld import kandinsky_world as kw
from ..toyworld import world
from .run_measures import RunMeasures

DECODE_STEPS = 8
JUDGED = "colour_and_cell"
"""The judge verdict the OVI verdicts compare: the toy decoder draws colour and cell reliably but blurs shapes
(see :func:`decoder_sanity`), so exact shape would measure the decoder, not the prior."""
HELD_OUT_SEED = 5150
"""Caption draw of the OVI rows (the first half's generation rows use 2024)."""


@dataclass
class OviWorld:
    encoders: object
    decoder: object
    stats: object
    judge: object


def load_ovi_world(models_dir: str) -> OviWorld:
    """Encoders, decoder, reference statistics and judge, each through the pack's own loader."""
    from ..models.kandinsky import load_decoder, load_encoders
    from ..ovi.reference_stats import load_reference_stats
    from .build import JUDGE_PATH, load_judge

    return OviWorld(load_encoders(os.path.join(models_dir, kw.PRIOR_DIR)),
                    load_decoder(os.path.join(models_dir, kw.DECODER_DIR)),
                    load_reference_stats(os.path.join(models_dir, kw.REFERENCE_PATH)),
                    load_judge(os.path.join(models_dir, JUDGE_PATH)))


def decode(ow: OviWorld, embeds: torch.Tensor, seed: int, steps: int = DECODE_STEPS) -> torch.Tensor:
    """``[B,3,64,64]`` world images for embeddings ``[B,D]`` (no guidance: the decoder was trained without
    dropping the condition)."""
    from ..ovi.decode import decode_image_embeds

    negative = ow.encoders.zero_image_embed()
    return decode_image_embeds(ow.decoder, embeds, negative, steps=steps, guidance=1.0, width=kw.DECODE_SIZE,
                               height=kw.DECODE_SIZE, seed=seed)


def judge_read(judge, images: torch.Tensor) -> torch.Tensor:
    """The judge's labels ``[B,9]`` of 64-px images (read at its 32-px training size)."""
    return judge.read(F.avg_pool2d(images.float(), 2))


def scene_for(labels: torch.Tensor, seed: int, size: int = kw.DECODE_SIZE) -> torch.Tensor:
    """``[1,3,size,size]``: a real world scene showing exactly ``labels [9]`` (centres jittered, grey background)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(8, generator=g)
    canvas = world.background(0.08 + 0.32 * u[:1], torch.zeros(1), torch.zeros(1), size)
    cell_px = size / 3
    for j, (cell, v) in enumerate((c, int(v)) for c, v in enumerate(labels.tolist()) if v > 0):
        cx = ((cell % 3) + 0.5) * cell_px + (float(u[1 + 3 * j]) - 0.5) * (4.0 * size / 32)
        cy = ((cell // 3) + 0.5) * cell_px + (float(u[2 + 3 * j]) - 0.5) * (4.0 * size / 32)
        radius = (3.4 + 1.4 * float(u[3 + 3 * j])) * (size / 32)
        canvas = world.paint(canvas, torch.tensor([v - 1]), torch.tensor([cx]), torch.tensor([cy]),
                             torch.tensor([radius]))
    return canvas.clamp(0, 1)


def colour_and_cell_rate(judge, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of 64-px ``images`` where the judge finds one object, of the caption's colour in its cell
    (``labels [B,9]`` or one ``[9]`` for all)."""
    from .measure import judge_verdicts

    labels = labels.expand(len(images), -1) if labels.ndim == 1 else labels
    hits = [judge_verdicts(judge, F.avg_pool2d(images[i:i + 1].float(), 2), labels[i])[1] for i in range(len(images))]
    return sum(hits) / len(hits)


def decoder_sanity(models_dir: str, count: int = 64, seed: int = 99) -> dict:
    """How often the judge reads a decoded real-scene embedding as that scene (single objects and pairs)."""
    ow = load_ovi_world(models_dir)
    scenes = world.sample_scenes(count, seed, two_object_fraction=0.3, size=kw.DECODE_SIZE)
    embeds = ow.encoders.encode_images(scenes.images)
    images = decode(ow, embeds, seed)
    read = judge_read(ow.judge, images)
    real = judge_read(ow.judge, scenes.images)
    single = (scenes.labels > 0).sum(-1) == 1
    return {"judge_accuracy_decoded_real_embeddings": round((read == scenes.labels).all(-1).float().mean().item(), 4),
            "judge_colour_and_cell_decoded_real_embeddings": round(
                colour_and_cell_rate(ow.judge, images[single], scenes.labels[single]), 4),
            "judge_accuracy_real_64px_scenes": round((real == scenes.labels).all(-1).float().mean().item(), 4),
            "decoded_mean_abs_error": round((images - scenes.images).abs().mean().item(), 4)}


@dataclass(frozen=True)
class OviBudget:
    steps: int = 500
    """The OVI node's default (paper: 500 to 1000); one token plateaus by 200 steps, four tokens still climb."""
    lr: float = 0.1
    tokens: int = 4
    """"Several tokens" of the unconstrained multi-token row."""
    lambda_m: float = 0.009
    lambda_m_collapse: float = 0.05
    lambda_m_scaled: float = 0.22
    """0.05 · sqrt(1280 / 64): d_M grows like sqrt(D), so the paper's collapse weight at the toy's 64 dimensions."""
    lambda_n: float = 0.5
    decode_steps: int = DECODE_STEPS


def ovi_methods(budget: OviBudget) -> dict[str, dict]:
    """Method name -> :func:`ovi.optimize_ovi` options (``None``: not an OVI run)."""
    return {
        "textemb": None,
        "ovi_1": {"num_tokens": 1},
        f"ovi_{budget.tokens}": {"num_tokens": budget.tokens},
        f"mahalanobis_{budget.lambda_m:g}": {"num_tokens": 1, "lambda_m": budget.lambda_m},
        f"mahalanobis_{budget.lambda_m_collapse:g}": {"num_tokens": 1, "lambda_m": budget.lambda_m_collapse},
        f"mahalanobis_{budget.lambda_m_scaled:g}": {"num_tokens": 1, "lambda_m": budget.lambda_m_scaled},
        f"nearest_{budget.lambda_n:g}": {"num_tokens": 1, "lambda_n": budget.lambda_n},
        "real": None,
    }


class OviScores(RunMeasures):
    NO_RUNS = 0.0
    """A measure of no runs reads 0, not NaN."""
    text_cosine: list[float]
    mahalanobis: list[float]
    nn_cosine: list[float]
    success: list[bool]
    """The judge reads the decoded image exactly as the caption says."""
    colour_and_cell: list[bool]
    alignment: list[float]
    """The toy CLIP's cosine between the decoded image and the caption (the benchmark-style score)."""

    def __init__(self):
        super().__init__()
        self.embeds: list[torch.Tensor] = []
        """Every run's image embedding ``[1,D]`` (for :attr:`spread`; not a measure)."""

    @property
    def spread(self) -> float:
        """Mean pairwise cosine between the embeddings of different captions (1 = every prompt collapsed to one)."""
        e = F.normalize(torch.cat(self.embeds), dim=-1)
        n = len(e)
        if n < 2:
            return float("nan")
        sim = e @ e.T
        return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def held_out_captions(count: int) -> list[tuple[str, torch.Tensor]]:
    from .measure import evaluation_captions

    return evaluation_captions(count, seed=HELD_OUT_SEED)


def method_embeds(ow: OviWorld, text_embed: torch.Tensor, labels: torch.Tensor, seed: int,
                  budget: OviBudget) -> dict[str, torch.Tensor]:
    """One ``[1,D]`` image embedding per method for one caption and seed."""
    from ..ovi.optimize import optimize_ovi

    out = {}
    for name, options in ovi_methods(budget).items():
        if name == "textemb":
            out[name] = text_embed
        elif name == "real":
            out[name] = ow.encoders.encode_images(scene_for(labels, seed))
        else:
            out[name] = optimize_ovi(ow.encoders.image_encoder, text_embed, steps=budget.steps, lr=budget.lr,
                                     seed=seed, stats=ow.stats, **options).image_embeds
    return out


def compare_ovi(ow: OviWorld, captions: list[tuple[str, torch.Tensor]], seeds: list[int],
                budget: OviBudget = OviBudget()) -> dict[str, OviScores]:
    from .measure import judge_verdicts

    scores = {name: OviScores() for name in ovi_methods(budget)}
    for caption, labels in captions:
        text = ow.encoders.encode_text([caption]).text_embeds
        for seed in seeds:
            embeds = method_embeds(ow, text, labels, seed, budget)
            names = list(embeds)
            stacked = torch.cat([embeds[n] for n in names])
            images = decode(ow, stacked, seed, budget.decode_steps)
            seen = ow.encoders.encode_images(images)
            for i, name in enumerate(names):
                s, e = scores[name], stacked[i:i + 1]
                s.embeds.append(e)
                s.text_cosine.append(float(F.cosine_similarity(e, text)))
                s.mahalanobis.append(float(ow.stats.mahalanobis(e)))
                s.nn_cosine.append(float(ow.stats.nearest_cosine(e)))
                exact, partial = judge_verdicts(ow.judge, F.avg_pool2d(images[i:i + 1], 2), labels)
                s.success.append(exact)
                s.colour_and_cell.append(partial)
                s.alignment.append(float(F.cosine_similarity(seen[i:i + 1], text)))
    return scores


def real_mahalanobis(ow: OviWorld, count: int = 256, seed: int = 77) -> float:
    """Mean Mahalanobis distance of fresh real single-object scenes (not in the statistics): the realistic level."""
    scenes = world.sample_scenes(count, seed, size=kw.DECODE_SIZE)
    return float(ow.stats.mahalanobis(ow.encoders.encode_images(scenes.images)).mean())


def _pct(x: float) -> str:
    return f"{x:.0%}"


def table_rows(scores: dict[str, OviScores], budget: OviBudget, real_level: float) -> list[tuple[str, str, str]]:
    """(claim, numbers, verdict) rows of the OVI claims; a claim that does not hold says so."""
    s = {k: v.summary() for k, v in scores.items()}
    text, real = s["textemb"], s["real"]
    one, several = s["ovi_1"], s[f"ovi_{budget.tokens}"]
    maha, collapse = s[f"mahalanobis_{budget.lambda_m:g}"], s[f"mahalanobis_{budget.lambda_m_collapse:g}"]
    scaled = s[f"mahalanobis_{budget.lambda_m_scaled:g}"]
    near = s[f"nearest_{budget.lambda_n:g}"]
    spread = {k: v.spread for k, v in scores.items()}
    yes = lambda c: "reproduced" if c else "NOT reproduced"  # noqa: E731

    def brief(name, x):
        return (f"{name}: cos {x['text_cosine']:.3f}, d_M {x['mahalanobis']:.1f}, NN cos {x['nn_cosine']:.3f}, "
                f"judge {_pct(x['success'])} (colour+cell {_pct(x['colour_and_cell'])})")

    climbs = max(one["text_cosine"], several["text_cosine"]) > 0.9
    looks_like_textemb = abs(several[JUDGED] - text[JUDGED]) < abs(several[JUDGED] - real[JUDGED])

    def verdict(*held):
        return "reproduced" if all(held) else ("partly" if any(held) else "NOT reproduced")

    rows = [
        ("OVI: unconstrained OVI climbs above 0.9 cosine to the text and decodes like TextEmb (OVI Fig. 2)",
         f"{brief('1 token', one)}; {brief(f'{budget.tokens} tokens', several)}; {brief('TextEmb', text)}; "
         f"{brief('real scene (trained-prior bound)', real)}; d_M of fresh real scenes {real_level:.1f}",
         verdict(climbs, looks_like_textemb)),
        (f"OVI: λ_M = {budget.lambda_m:g} holds the cosine below unconstrained (paper ~0.83) and moves toward real "
         "embeddings (OVI Fig. 4)",
         f"{brief(f'λ_M {budget.lambda_m:g}', maha)} vs unconstrained cos {one['text_cosine']:.3f}, "
         f"d_M {one['mahalanobis']:.1f}",
         verdict(maha["text_cosine"] < one["text_cosine"] - 0.01, maha["mahalanobis"] < one["mahalanobis"])),
        (f"OVI: λ_N = {budget.lambda_n:g} holds the cosine below unconstrained (paper ~0.88) and near a real "
         "embedding (OVI Fig. 4)",
         f"{brief(f'λ_N {budget.lambda_n:g}', near)} vs unconstrained cos {one['text_cosine']:.3f}, "
         f"NN cos {one['nn_cosine']:.3f}",
         verdict(near["text_cosine"] < one["text_cosine"] - 0.01, near["nn_cosine"] > one["nn_cosine"])),
        (f"OVI: λ_M ≥ {budget.lambda_m_collapse:g} collapses every prompt to the mean (OVI Fig. 5)",
         f"{brief(f'λ_M {budget.lambda_m_collapse:g}', collapse)}; mean cosine between different captions' "
         f"embeddings {spread[f'mahalanobis_{budget.lambda_m_collapse:g}']:.3f} (unconstrained "
         f"{spread['ovi_1']:.3f}, real scenes {spread['real']:.3f}); dimension-matched "
         f"{brief(f'λ_M {budget.lambda_m_scaled:g}', scaled)}, between-caption cosine "
         f"{spread[f'mahalanobis_{budget.lambda_m_scaled:g}']:.3f}",
         yes(spread[f"mahalanobis_{budget.lambda_m_collapse:g}"] > 0.9
             and collapse[JUDGED] < maha[JUDGED])),
        ("OVI: constrained OVI is more realistic than TextEmb (OVI Fig. 4; realism = judge reads the decoded image)",
         f"judge colour+cell (exact shape in the first row): λ_M {budget.lambda_m:g} {_pct(maha[JUDGED])}, "
         f"λ_N {budget.lambda_n:g} {_pct(near[JUDGED])}, unconstrained {_pct(one[JUDGED])}, "
         f"TextEmb {_pct(text[JUDGED])}, real "
         f"{_pct(real[JUDGED])}; d_M {maha['mahalanobis']:.1f} / {near['mahalanobis']:.1f} vs TextEmb "
         f"{text['mahalanobis']:.1f}",
         yes(min(maha[JUDGED], near[JUDGED]) > text[JUDGED])),
    ]
    methods = [k for k in scores if k != "real"]
    by_alignment = max(methods, key=lambda k: s[k]["alignment"])
    by_judge = max(methods, key=lambda k: s[k][JUDGED])
    ranked = sorted(methods, key=lambda k: s[k]["alignment"])
    textemb_favoured = (ranked.index("textemb") >= len(ranked) // 2
                        and s["textemb"][JUDGED] == min(s[k][JUDGED] for k in methods))
    rows.append((
        "OVI: a CLIP text–image score is a poor benchmark: it can rank a method high that the judge rejects "
        "(OVI §5 critique)",
        "toy-CLIP alignment of the decoded image / judge colour+cell: " + "; ".join(
            f"{k} {s[k]['alignment']:.3f} / {_pct(s[k][JUDGED])}" for k in scores)
        + f"; best by alignment: {by_alignment}, best by judge: {by_judge}",
        "reproduced" if textemb_favoured else ("partly: the score's favourite is not the judge's, but TextEmb "
                                               "scores low too" if s[by_alignment][JUDGED] < s[by_judge][JUDGED]
                                               else "NOT reproduced")))
    return rows


def ovi_table(models_dir: str, captions: int = 8, seeds: int = 2, budget: OviBudget = OviBudget()):
    """The OVI rows on the fixtures in ``models_dir`` (what ``benchmarks/toyworld_claims.py`` prints)."""
    ow = load_ovi_world(models_dir)
    scores = compare_ovi(ow, held_out_captions(captions), list(range(seeds)), budget)
    return table_rows(scores, budget, real_mahalanobis(ow)), scores


def with_ovi_rows(table: list[tuple[str, str, str]], models_dir: str, captions: int = 8, seeds: int = 2,
                  budget: OviBudget = OviBudget()) -> list[tuple[str, str, str]]:
    """``table`` with its "not measured" OVI row replaced by the measured rows, when ``models_dir`` holds the OVI
    fixtures (``python -m fusedream_ops.toyworld.build_ovi``)."""
    if not os.path.isdir(os.path.join(models_dir, kw.DECODER_DIR)):
        return table
    rows, _ = ovi_table(models_dir, captions, seeds, budget)
    return [r for r in table if not r[0].startswith("OVI constraints")] + rows
