"""The output folder of a batch run, written so that a crash at any moment loses at most the images in flight.

    <out>/run.json            method, settings, run seed: a restart with other settings is refused
    <out>/images/<key>.png    one image per (prompt, seed), with its record in PNG text chunks
    <out>/records/<key>.json  the latest record of each job (ok, or failed with its error and attempts)
    <out>/manifest.jsonl      one row per image in prompt-file order, rebuilt from the records

Every file is written to a temporary name and renamed over the target (``os.replace``), the image before its
record, so a record saying ``ok`` always has its complete image. The manifest is rebuilt from the records at
intervals and at the end of a run; the records are the truth a restart reads.
"""
from __future__ import annotations

import hashlib
import json
import os

from ..core.checkpoints import atomic_write, atomic_write_text
from ..core.errors import FuseDreamError
from .jobs import Job
from .worker import Outcome

IMAGES, RECORDS, MANIFEST, RUN = "images", "records", "manifest.jsonl", "run.json"


class RunFolder:
    def __init__(self, folder: str):
        self.folder = os.path.abspath(folder)
        self.records: dict[str, dict] = {}

    def path(self, *parts: str) -> str:
        return os.path.join(self.folder, *parts)

    def prepare(self, config: dict, models: dict) -> None:
        """Write ``run.json``, or check that the run being resumed used the same method, settings and seeds
        (``models`` are recorded, not compared: model paths may differ between machines)."""
        existing = self.path(RUN)
        if os.path.isfile(existing):
            with open(existing, encoding="utf-8") as f:
                before = json.load(f)
            changed = sorted(k for k in config if before.get(k) != config[k])
            if changed:
                detail = "; ".join(f"{k}: {before.get(k)!r} then, {config.get(k)!r} now" for k in changed)
                raise FuseDreamError(f"output folder '{self.folder}' holds a run with other settings ({detail}). "
                                     f"Resume it with the same settings, or choose a new output folder.")
        else:
            atomic_write_text(existing, json.dumps(dict(config, models=models), indent=2, sort_keys=True) + "\n")
        for sub in (IMAGES, RECORDS):
            os.makedirs(self.path(sub), exist_ok=True)
            for name in os.listdir(self.path(sub)):  # a temporary file a killed run left behind
                if name.startswith(".tmp-"):
                    os.remove(self.path(sub, name))
        self.records = {}
        for name in os.listdir(self.path(RECORDS)):
            if name.endswith(".json") and not name.startswith(".tmp-"):
                with open(self.path(RECORDS, name), encoding="utf-8") as f:
                    record = json.load(f)
                self.records[record["key"]] = record

    def is_done(self, job: Job) -> bool:
        record = self.records.get(job.key)
        return bool(record) and record["status"] == "ok" and os.path.isfile(self.path(record["image"]))

    def attempts(self, job: Job) -> int:
        record = self.records.get(job.key)
        return 0 if record is None else int(record.get("attempts", 0))

    def save(self, job: Job, method: str, outcome: Outcome, attempts: int) -> dict:
        record = {"key": job.key, "id": job.id, "prompt": job.prompt, "seed": job.seed, "index": job.index,
                  "method": method, "status": outcome.status, "scores": outcome.scores,
                  "time": round(outcome.seconds, 3), "device": outcome.device, "worker": outcome.worker,
                  "attempts": attempts, "error": outcome.error, "image": None, "sha256": None}
        if outcome.status == "ok":
            image = os.path.join(IMAGES, f"{job.key}.png")

            def write(tmp, data=outcome.png):
                with open(tmp, "wb") as f:
                    f.write(data)

            atomic_write(self.path(image), write)
            record.update(image=image, sha256=hashlib.sha256(outcome.png).hexdigest())
        atomic_write_text(self.path(RECORDS, f"{job.key}.json"), json.dumps(record, sort_keys=True) + "\n")
        self.records[job.key] = record
        return record

    def write_manifest(self, jobs: list[Job]) -> str:
        rows = [json.dumps(self.records[j.key], sort_keys=True) for j in jobs if j.key in self.records]
        atomic_write_text(self.path(MANIFEST), "".join(row + "\n" for row in rows))
        return self.path(MANIFEST)


def read_manifest(path: str) -> list[dict]:
    """The rows of a manifest (a ``manifest.jsonl`` file or the run folder holding one)."""
    if os.path.isdir(path):
        path = os.path.join(path, MANIFEST)
    if not os.path.isfile(path):
        raise FuseDreamError(f"manifest '{path}' does not exist; give a batch run's output folder or its "
                             f"{MANIFEST}.")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
