"""Evaluate batch runs: their manifests in, one row of metrics per run out (a table and a JSON)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..batch.prompts import read_prompts
from ..batch.store import RUN, read_manifest
from ..core.errors import require
from .extract import FeatureWorker, extract
from .metrics import frechet_distance, inception_score, r_precision
from .reference import default_cache_dir, reference_statistics


@dataclass
class EvaluationSettings:
    network: str = "inception"
    network_path: str = ""
    """Inception: torch-fidelity's weights file; toyworld: the judge's safetensors."""
    reference: str | None = None
    """Folder of real images for FID (None: no FID)."""
    eval_clip: str | None = None
    """The evaluation CLIP checkpoint for R-precision (None: no R-precision)."""
    eval_clip_arch: str = "auto"
    distractors: str | None = None
    """Prompt file whose captions are the R-precision distractor pool (default: the runs' own captions)."""
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
    """Metrics of every run folder (or manifest) in ``runs``; images with status ``ok`` only."""
    require(bool(runs), "give at least one batch run folder or manifest to evaluate.")
    loaded = []
    for run in runs:
        rows = [r for r in read_manifest(run) if r["status"] == "ok"]
        folder = run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run))
        require(bool(rows), f"'{run}' has no finished image to evaluate.")
        loaded.append((run, folder, rows, _run_info(folder)))
    if s.eval_clip is not None:
        require(os.path.isfile(s.eval_clip), f"evaluation CLIP '{s.eval_clip}' does not exist.")
    worker_args = {"network": s.network, "network_path": s.network_path, "clip": s.eval_clip,
                   "clip_arch": s.eval_clip_arch, "device": s.device, "batch_size": s.batch_size}
    local = FeatureWorker(**worker_args) if s.ray is None or s.eval_clip is not None else None
    out = {"feature_network": s.network, "feature_weights": os.path.basename(s.network_path),
           "evaluation_clip": None if s.eval_clip is None else os.path.basename(s.eval_clip),
           "reference": s.reference, "runs": []}
    real = None
    if s.reference is not None:
        real, cache, cached = reference_statistics(
            s.reference, s.network, s.network_path, s.cache_dir or default_cache_dir(),
            lambda paths: extract(paths, worker_args, False, s.ray, s.workers, local=local)["pool"])
        out.update(reference_cache=cache, reference_from_cache=cached, reference_images=int(real["count"]))
    pool = sorted({r["prompt"] for _, _, rows, _ in loaded for r in rows})
    if s.distractors is not None:
        pool = sorted(set(pool) | {item.prompt for item in read_prompts(s.distractors)})
    text = {}
    if s.eval_clip is not None:
        text = dict(zip(pool, local.encode_text(pool)))
    for run, folder, rows, info in loaded:
        paths = [os.path.join(folder, r["image"]) for r in rows]
        feats = extract(paths, worker_args, s.eval_clip is not None, s.ray, s.workers, local=local)
        guidance = info.get("models", {}).get("clip")
        result = {"run": run, "method": rows[0]["method"], "images": len(rows),
                  "guidance_clip": None if guidance is None else os.path.basename(guidance)}
        splits = min(s.splits, len(rows))
        result["is_mean"], result["is_std"] = inception_score(feats["logits"], splits, s.seed)
        result["is_splits"] = splits
        if real is not None:
            result["fid"] = frechet_distance(feats["pool"], real)
        if s.eval_clip is not None:
            mean, std, used = r_precision(feats["clip"], [r["prompt"] for r in rows], text, pool,
                                          s.candidates, s.repeats, s.seed)
            result.update(r_precision_mean=mean, r_precision_std=std, r_precision_candidates=used,
                          evaluation_clip_is_guidance=guidance is not None and
                          os.path.realpath(guidance) == os.path.realpath(s.eval_clip))
        out["runs"].append(result)
    return out


def format_table(result: dict) -> str:
    clip = result["evaluation_clip"]
    lines = [f"feature network for IS/FID: {result['feature_network']} ({result['feature_weights']})"
             + ("" if result["feature_network"] == "inception" else " — a toy-world stand-in, not Inception"),
             f"R-precision: evaluation CLIP {clip}" if clip else "R-precision: not computed (no evaluation CLIP)"]
    if result.get("reference"):
        lines.append(f"FID reference: {result['reference']} ({result['reference_images']} images, statistics "
                     f"{'from the cache' if result['reference_from_cache'] else 'computed and cached'}: "
                     f"{result['reference_cache']})")
    lines += ["", "| run | method | images | guidance CLIP | IS ↑ | FID ↓ | R-precision ↑ (%) |", "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        fid = f"{r['fid']:.2f}" if "fid" in r else "—"
        if "r_precision_mean" in r:
            rp = (f"{100 * r['r_precision_mean']:.2f} ± {100 * r['r_precision_std']:.2f} "
                  f"(1 + {r['r_precision_candidates'] - 1})")
            if r["evaluation_clip_is_guidance"]:
                rp += " (grades itself: same CLIP as guidance)"
        else:
            rp = "—"
        lines.append(f"| {r['run']} | {r['method']} | {r['images']} | {r['guidance_clip'] or '?'} | "
                     f"{r['is_mean']:.2f} ± {r['is_std']:.2f} | {fid} | {rp} |")
    return "\n".join(lines)
