"""The output folder of a batch run, written so that a crash at any moment loses at most the images in flight.

    <out>/run.json            method, settings, run seed: a restart with other settings is refused
    <out>/images/<key>.png    one image per (prompt, seed), with its record in PNG text chunks
    <out>/records/<key>.json  the latest record of each job (ok, or failed with its error and attempts)
    <out>/manifest.jsonl      one row per image in prompt-file order, rebuilt from the records
    <out>/superseded/         images and records set aside: made for an earlier prompt file, or unreadable

Every file is written to a temporary name and renamed over the target (``os.replace``), the image before its
record, so a record saying ``ok`` always has its complete image. The manifest is rebuilt from the records at
intervals and at the end of a run; the records are the truth a restart reads. A record counts only for the job
it was made for (same id, prompt, seed, method and settings); one that is not, or cannot be read, is moved to
``superseded/`` with its image (never deleted) and its job is made again.
"""
from __future__ import annotations

import hashlib
import json
import os

from ..core.checkpoints import atomic_write, atomic_write_text
from ..core.errors import FuseDreamError
from ..core.json_lines import json_lines
from .jobs import Job
from .worker import Outcome

IMAGES, RECORDS, MANIFEST, RUN = "images", "records", "manifest.jsonl", "run.json"
SUPERSEDED = "superseded"
"""Where images and records that no longer belong to the run are moved (never deleted): an image made for an
earlier version of the prompt file, or the files of a record that cannot be read."""
SHOWN = 3
"""Changed or damaged records named one by one in a note; the rest are counted."""


def _json_error(exc: json.JSONDecodeError) -> str:
    return f"line {exc.lineno} column {exc.colno}: {exc.msg}"


def _read_record(path: str, key: str) -> tuple[dict | None, str | None]:
    """``(record, None)``, or ``(None, why it cannot be used)`` for a damaged file."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except json.JSONDecodeError as exc:
        return None, f"is not JSON ({_json_error(exc)})"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot be read ({exc})"
    if not isinstance(record, dict) or record.get("key") != key or record.get("status") not in ("ok", "failed"):
        return None, "is not a record of this image (key or status missing)"
    if not isinstance(record.get("attempts"), int) or (record["status"] == "ok" and not record.get("image")):
        return None, "is incomplete (attempts or image missing)"
    return record, None


def changes(record: dict, job: Job, method: str, settings: dict) -> list[str]:
    """What differs between the job a record was made for and ``job`` (empty: the record is this job's)."""
    now = {"id": job.id, "prompt": job.prompt, "seed": job.seed, "index": job.index, "method": method,
           "settings": settings}
    if "settings" not in record:  # written before records held settings: run.json vouches for them
        now.pop("settings")
    return [f"{name} {record.get(name)!r} then, {value!r} now" for name, value in now.items()
            if record.get(name) != value]


def _summary(what: str, lines: list[str]) -> str:
    shown = "; ".join(lines[:SHOWN]) + (f"; and {len(lines) - SHOWN} more" if len(lines) > SHOWN else "")
    return f"{len(lines)} {what}: {shown}."


class RunFolder:
    def __init__(self, folder: str):
        self.folder = os.path.abspath(folder)
        self.records: dict[str, dict] = {}

    def path(self, *parts: str) -> str:
        return os.path.join(self.folder, *parts)

    def prepare(self, config: dict, models: dict) -> list[str]:
        """Write ``run.json``, or check that the run being resumed used the same method, settings and seeds
        (``models`` are recorded, not compared: model paths may differ between machines); load the records.
        Returns notes on records that could not be read (their files are moved to ``superseded/``)."""
        existing = self.path(RUN)
        if os.path.isfile(existing):
            before = self._read_run(existing)
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
        damaged = []
        for name in sorted(os.listdir(self.path(RECORDS))):
            if name.endswith(".json") and not name.startswith(".tmp-"):
                key = name[:-len(".json")]
                record, why = _read_record(self.path(RECORDS, name), key)
                if record is None:
                    damaged.append(f"{RECORDS}/{name} {why}")
                    self.set_aside(key)
                else:
                    self.records[key] = record
        if not damaged:
            return []
        return [_summary(f"record(s) could not be read, so their images are made again (the old files are in "
                         f"{SUPERSEDED}/)", damaged)]

    def _read_run(self, path: str) -> dict:
        why = "not a JSON object"
        try:
            with open(path, encoding="utf-8") as f:
                before = json.load(f)
        except json.JSONDecodeError as exc:
            before, why = None, _json_error(exc)
        except UnicodeDecodeError as exc:
            before, why = None, str(exc)
        if not isinstance(before, dict):
            raise FuseDreamError(f"'{path}' is damaged ({why}). It holds the method and settings this folder's "
                                 f"images were made with: restore it, or delete it to continue with this "
                                 f"command's settings (every image's record is still checked against its prompt, "
                                 f"seed and settings, and images that differ are moved to {SUPERSEDED}/).")
        return before

    def set_aside(self, key: str) -> None:
        """Move the image and record of ``key`` to ``superseded/`` under a name not used yet (nothing is lost)."""
        os.makedirs(self.path(SUPERSEDED), exist_ok=True)
        number = 0
        while any(os.path.exists(self.path(SUPERSEDED, f"{key}~{number}{ext}")) for ext in (".png", ".json")):
            number += 1
        for sub, ext in ((IMAGES, ".png"), (RECORDS, ".json")):
            if os.path.exists(self.path(sub, key + ext)):
                os.replace(self.path(sub, key + ext), self.path(SUPERSEDED, f"{key}~{number}{ext}"))
        self.records.pop(key, None)

    def keep_matching(self, jobs: list[Job], method: str, settings: dict) -> list[str]:
        """Set aside every record made for another prompt, seed, method or settings than its job's now (an edited
        prompt file), so that job is made again; returns a note naming what changed."""
        changed = []
        for job in jobs:
            record = self.records.get(job.key)
            differences = changes(record, job, method, settings) if record else []
            if differences:
                changed.append(f"{job.key} ({', '.join(differences)})")
                self.set_aside(job.key)
        if not changed:
            return []
        return [_summary(f"image(s) were made for another prompt, seed or settings than the prompt file now gives, "
                         f"so they are made again (the old files are in {SUPERSEDED}/)", changed)]

    def is_done(self, job: Job) -> bool:
        record = self.records.get(job.key)
        return bool(record) and record["status"] == "ok" and os.path.isfile(self.path(record["image"]))

    def attempts(self, job: Job) -> int:
        record = self.records.get(job.key)
        return 0 if record is None else int(record.get("attempts", 0))

    def save(self, job: Job, method: str, settings: dict, outcome: Outcome, attempts: int) -> dict:
        record = {"key": job.key, "id": job.id, "prompt": job.prompt, "seed": job.seed, "index": job.index,
                  "method": method, "settings": settings, "status": outcome.status, "scores": outcome.scores,
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
    """The rows of a manifest (a ``manifest.jsonl`` file or the run folder holding one); a damaged line is refused
    with its number (rerunning the batch command rebuilds the manifest from ``records/``)."""
    if os.path.isdir(path):
        path = os.path.join(path, MANIFEST)
    if not os.path.isfile(path):
        raise FuseDreamError(f"manifest '{path}' does not exist; give a batch run's output folder or its "
                             f"{MANIFEST}.")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, row, error in json_lines(f):
            why = error.msg if error is not None else "not a record with a key and status"
            if not (isinstance(row, dict) and "key" in row and "status" in row):
                raise FuseDreamError(f"{path} line {number} is damaged ({why}). Run the same batch command on its "
                                     f"folder again: it rebuilds {MANIFEST} from the records in {RECORDS}/.")
            rows.append(row)
    return rows
