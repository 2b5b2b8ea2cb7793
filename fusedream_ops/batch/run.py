"""``run_batch``: a prompt file in, one PNG per (prompt, seed) and a manifest out; resumable, on one device or Ray.

    from fusedream_ops.batch import MethodSpec, run_batch

    spec = MethodSpec("fusedream", {"steps": 300},
                      {"biggan": "models/biggan/biggan-deep-256", "clip": "models/open_clip/ViT-B-32.safetensors"})
    summary = run_batch("captions.txt", "runs/coco-fusedream", spec, run_seed=0)
    summary.manifest   # runs/coco-fusedream/manifest.jsonl

Run it again with the same arguments after a crash, a kill or Ctrl-C: finished images are skipped, failed ones are
retried until they have used ``attempts`` tries in all, and the images are identical to an uninterrupted run's.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field

from ..validation.numbers import require_number
from .jobs import Job, plan_jobs
from .methods import MethodSpec, check_spec
from .pools import EmbeddedPool, RayPool
from .prompts import PromptItem, read_prompts
from .store import RunFolder

MANIFEST_EVERY_S = 30.0
"""How often the manifest is rebuilt during a run (the records are written at once; this is only the summary)."""
MAX_ATTEMPTS = 100
"""Tries per image at most (a death of its worker counts as one)."""


@dataclass
class BatchSummary:
    manifest: str
    total: int
    ok: int
    failed: int
    made_now: int
    """Images made by this call (the rest were already there)."""
    seconds: float
    where: str
    notes: list[str] = field(default_factory=list)
    """What the run found in its folder and changed: records for an edited prompt file, unreadable records."""


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="img", disable=not enabled, dynamic_ncols=True,
                desc="images")


def _whole(name: str, value, low: int = 1, high: int | None = None, optional: bool = False):
    return None if optional and value is None else require_number(name, value, low, high, integer=True)


def run_batch(prompts: str | list[PromptItem], out_dir: str, spec: MethodSpec, run_seed: int = 0,
              images_per_prompt: int = 1, ray: str | None = None, workers: int | None = None,
              cpus_per_worker: int = 1, ship_code: bool = False, device: str | None = None,
              threads: int | None = None, attempts: int = 3, progress: bool = True) -> BatchSummary:
    """Make every image of ``prompts`` (a prompt file or :class:`PromptItem` list) with ``spec`` into ``out_dir``.

    ``ray=None`` runs in this process on ``device`` (default: CUDA if available) with ``threads`` torch threads;
    ``ray="auto"`` or an address runs ``workers`` Ray actors (default: one per GPU, else one per
    ``cpus_per_worker`` CPUs; ``device`` cpu or cuda picks the kind). ``attempts`` bounds the tries of a failing
    image across restarts. Every setting, seed and the cluster's room for the workers are checked before the
    folder is touched or a model loads.
    """
    start = time.monotonic()
    items = read_prompts(prompts) if isinstance(prompts, str) else list(prompts)
    attempts = _whole("attempts", attempts, high=MAX_ATTEMPTS)
    workers, threads = _whole("workers", workers, optional=True), _whole("threads", threads, optional=True)
    cpus_per_worker = _whole("cpus per worker", cpus_per_worker)
    spec = check_spec(spec)
    jobs = plan_jobs(items, run_seed, images_per_prompt)
    pool = (EmbeddedPool(spec.as_dict(), device, threads) if ray is None else
            RayPool(spec.as_dict(), ray, workers, cpus_per_worker, ship_code, device))
    folder = RunFolder(out_dir)
    notes = folder.prepare({"method": spec.method, "settings": spec.settings, "run_seed": int(run_seed),
                            "images_per_prompt": int(images_per_prompt)}, spec.models)
    notes += folder.keep_matching(jobs, spec.method, spec.settings)
    for note in notes:
        print(f"[FuseDream] {note}", file=sys.stderr)
    done = sum(folder.is_done(j) for j in jobs)
    queue: deque[Job] = deque(j for j in jobs if not folder.is_done(j) and folder.attempts(j) < attempts)
    made_now = 0
    where = "nothing to do"
    if queue:
        pool.start()
        where = pool.description
        bar = _progress(len(jobs), done, progress)
        bar.set_postfix_str(where)
        session_start, last_manifest = time.monotonic(), time.monotonic()
        in_flight = 0
        try:
            while queue or in_flight:
                while queue and pool.free() > 0:
                    pool.submit([queue.popleft()])
                    in_flight += 1
                for job, outcome in pool.wait():
                    in_flight -= 1
                    if outcome is None:  # not the job's doing (its worker was unreachable or could not start)
                        queue.appendleft(job)
                        continue
                    tries = folder.attempts(job) + 1
                    folder.save(job, spec.method, spec.settings, outcome, tries)
                    if outcome.status == "ok":
                        made_now += 1
                        bar.update(1)
                        rate = made_now / max(1e-9, time.monotonic() - session_start) * 3600
                        bar.set_postfix_str(f"{rate:.0f} img/h, {where}")
                    elif tries < attempts:
                        queue.append(job)
                if time.monotonic() - last_manifest > MANIFEST_EVERY_S:
                    folder.write_manifest(jobs)
                    last_manifest = time.monotonic()
        finally:
            bar.close()
            folder.write_manifest(jobs)
            pool.close()
    manifest = folder.write_manifest(jobs)
    statuses = [folder.records[j.key]["status"] for j in jobs if j.key in folder.records]
    return BatchSummary(manifest, len(jobs), statuses.count("ok"), statuses.count("failed"), made_now,
                        time.monotonic() - start, where, notes)
