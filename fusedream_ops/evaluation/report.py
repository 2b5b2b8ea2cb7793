"""Evaluate batch runs: their manifests in, one row of metrics per run out (a table and a JSON)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..batch.prompts import read_prompts
from ..batch.store import RUN
from ..core.errors import require
from .extract import FeatureWorker, extract
from .manifest import read_run
from .metrics import clip_r_precision, frechet_distance, inception_score, inception_score_bound
from .reference import default_cache_dir, reference_statistics


@dataclass
class EvaluationSettings:
    network: str = "inception"
    network_path: str = ""
    """Inception: torch-fidelity's weights file; toyworld: the judge's safetensors."""
    reference: str | None = None
    """Folder of real images for FID (None: no FID)."""
    eval_clip: str | None = None
    """The evaluation CLIP checkpoint for CLIP R-precision (None: none computed)."""
    eval_clip_arch: str = "auto"
    distractors: str | None = None
    """Prompt file whose captions are the CLIP R-precision distractor pool (default: the runs' own captions)."""
    candidates: int = 100
    repeats: int = 3
    splits: int = 10
    seed: int = 0
    batch_size: int = 64
    device: str | None = None
    ray: str | None = None
    workers: int | None = None
    cache_dir: str | None = None


def _run_info(run_dir: str) -> dict:
    path = os.path.join(run_dir, RUN)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def evaluate_runs(runs: list[str], s: EvaluationSettings) -> dict:
    """Metrics of every run folder (or manifest) in ``runs``; images with status ``ok`` only. Every manifest row
    and image header is checked (:mod:`.manifest`) before a network is loaded."""
    require(bool(runs), "give at least one batch run folder or manifest to evaluate.")
    loaded = []
    for run in runs:
        images = read_run(run)
        require(bool(images.rows), f"'{run}' has no finished image to evaluate.")
        loaded.append((run, images, _run_info(images.folder)))
    if s.eval_clip is not None:
        require(os.path.isfile(s.eval_clip), f"evaluation CLIP '{s.eval_clip}' does not exist.")
    worker_args = {"network": s.network, "network_path": s.network_path, "clip": s.eval_clip,
                   "clip_arch": s.eval_clip_arch, "device": s.device, "batch_size": s.batch_size}
    loaded_workers: list[FeatureWorker] = []

    def local() -> FeatureWorker | None:
        """The in-process worker (networks loaded on first use, after the inputs are checked); None on Ray."""
        if (s.ray is None or s.eval_clip is not None) and not loaded_workers:
            loaded_workers.append(FeatureWorker(**worker_args))
        return loaded_workers[0] if loaded_workers else None

    out = {"feature_network": s.network, "feature_weights": os.path.basename(s.network_path),
           "evaluation_clip": None if s.eval_clip is None else os.path.basename(s.eval_clip),
           "reference": s.reference, "runs": []}
    real = None
    if s.reference is not None:
        real, cache, cached = reference_statistics(
            s.reference, s.network, s.network_path, s.cache_dir or default_cache_dir(),
            lambda paths: extract(paths, worker_args, False, s.ray, s.workers, local=local())["pool"])
        out.update(reference_cache=cache, reference_from_cache=cached, reference_images=int(real["count"]))
    pool = sorted({r["prompt"] for _, images, _ in loaded for r in images.rows})
    if s.distractors is not None:
        pool = sorted(set(pool) | {item.prompt for item in read_prompts(s.distractors)})
    text = {}
    if s.eval_clip is not None:
        text = dict(zip(pool, local().encode_text(pool)))
    for run, images, info in loaded:
        rows = images.rows
        feats = extract([r["path"] for r in rows], worker_args, s.eval_clip is not None, s.ray, s.workers,
                        local=local())
        guidance = info.get("models", {}).get("clip")
        result = {"run": run, "method": rows[0]["method"], "images": len(rows),
                  "guidance_clip": None if guidance is None else os.path.basename(guidance)}
        splits = min(s.splits, len(rows))
        result["is_mean"], result["is_std"] = inception_score(feats["logits"], splits, s.seed)
        result["is_splits"] = splits
        result["is_bound"] = inception_score_bound(len(rows), splits, feats["logits"].shape[1])
        if real is not None:
            result["fid"] = frechet_distance(feats["pool"], real)
            dim = feats["pool"].shape[1]
            result["fid_features"] = dim
            result["fid_singular"] = len(rows) <= dim or int(real["count"]) <= dim
        if s.eval_clip is not None:
            mean, std, used = clip_r_precision(feats["clip"], [r["prompt"] for r in rows], text, pool,
                                               s.candidates, s.repeats, s.seed)
            result.update(clip_r_precision_mean=mean, clip_r_precision_std=std, clip_r_precision_candidates=used,
                          evaluation_clip_is_guidance=guidance is not None and
                          os.path.realpath(guidance) == os.path.realpath(s.eval_clip))
        out["runs"].append(result)
    return out


def format_table(result: dict) -> str:
    clip = result["evaluation_clip"]
    lines = [f"feature network for IS/FID: {result['feature_network']} ({result['feature_weights']})"
             + ("" if result["feature_network"] == "inception" else " — a toy-world stand-in, not Inception"),
             f"CLIP R-precision: evaluation CLIP {clip}" if clip
             else "CLIP R-precision: not computed (no evaluation CLIP)",
             "(the paper's DAMSM R-precision is not reproduced)"]
    if result.get("reference"):
        lines.append(f"FID reference: {result['reference']} ({result['reference_images']} images, statistics "
                     f"{'from the cache' if result['reference_from_cache'] else 'computed and cached'}: "
                     f"{result['reference_cache']})")
    lines += ["", "| run | method | images | guidance CLIP | IS ↑ | FID ↓ | CLIP R-precision ↑ (%) |",
              "|---|---|---|---|---|---|---|"]
    notes = []
    for r in result["runs"]:
        is_ = f"{r['is_mean']:.2f}" + ("" if r["is_std"] is None else f" ± {r['is_std']:.2f}")
        if r["is_mean"] > 0.8 * r["is_bound"]:
            is_ += f" (≤ {r['is_bound']:.0f} ¹)"
            notes.append(f"¹ IS cannot exceed the images per split ({r['images']} in {r['is_splits']} split(s)) or "
                         f"the classes; near that bound it says little: evaluate more images"
                         + (" or use fewer --splits." if r["is_splits"] > 1 else "."))
        fid = "—"
        if "fid" in r:
            fid = f"{r['fid']:.2f}" + (" ²" if r["fid_singular"] else "")
            if r["fid_singular"]:
                notes.append(f"² no more images than the {r['fid_features']} features (generated or reference): "
                             f"the covariance is singular; this FID is not comparable with FIDs of larger samples.")
        if "clip_r_precision_mean" in r:
            rp = (f"{100 * r['clip_r_precision_mean']:.2f} ± {100 * r['clip_r_precision_std']:.2f} "
                  f"(1 + {r['clip_r_precision_candidates'] - 1})")
            if r["evaluation_clip_is_guidance"]:
                rp += " (grades itself: same CLIP as guidance)"
        else:
            rp = "—"
        lines.append(f"| {r['run']} | {r['method']} | {r['images']} | {r['guidance_clip'] or '?'} | "
                     f"{is_} | {fid} | {rp} |")
    return "\n".join(lines + ([""] + sorted(set(notes)) if notes else []))
