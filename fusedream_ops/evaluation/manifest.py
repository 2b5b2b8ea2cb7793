"""A batch run's manifest as the evaluation reads it: every row checked, every error naming the file and line.

The batch command writes ``manifest.jsonl`` (one JSON object per image, see :mod:`fusedream_ops.batch.store`);
the evaluation scores the rows with ``status`` ``ok``. A row it cannot trust stops the evaluation before any
network is loaded: a line that is not a JSON object (a truncated file), a row without ``status`` or an ``ok``
row without ``image``/``prompt``/``method``, an image path that leaves the run folder (absolute, ``..``, or a
symlink out of it: a manifest only names ``images/<key>.png`` inside its own folder), a missing image, or one
that is not an image or declares more than :data:`.extract.MAX_PIXELS` (the header only, :func:`check_image`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..batch.store import MANIFEST
from ..core.errors import FuseDreamError, require
from ..core.json_lines import json_lines
from ..safety.contained import resolved_inside
from ..safety.image_files import check_image
from .extract import MAX_PIXELS

STATUSES = ("ok", "failed")
OK_FIELDS = ("image", "prompt", "method")


@dataclass
class RunImages:
    folder: str
    manifest: str
    rows: list[dict]
    """The ``ok`` rows, each with ``path``: its image's absolute path inside ``folder``."""


def read_run(run: str) -> RunImages:
    """The finished images of a batch run folder (or its manifest file), every row and image header checked."""
    manifest = os.path.join(run, MANIFEST) if os.path.isdir(run) else run
    require(os.path.isfile(manifest), f"manifest '{manifest}' does not exist; give a batch run's output folder or "
                                      f"its {MANIFEST}.")
    folder = os.path.dirname(os.path.abspath(manifest))
    rebuild = f"rerun the batch command on '{folder}' to rebuild the manifest from its records/"
    rows = []
    with open(manifest, encoding="utf-8", errors="replace") as f:
        for number, row, error in json_lines(f):
            where = f"{manifest} line {number}"
            if error is not None:
                raise FuseDreamError(f"{where} is not a JSON object ({error.msg}; truncated?): {rebuild}.")
            require(isinstance(row, dict), f"{where} is not a JSON object: {rebuild}.")
            require(row.get("status") in STATUSES,
                    f"{where} has status {row.get('status', 'missing')!r}; a manifest row's status is "
                    f"{' or '.join(STATUSES)}: {rebuild}.")
            if row["status"] != "ok":
                continue
            for field in OK_FIELDS:
                require(isinstance(row.get(field), str) and row[field] != "",
                        f"{where} is an ok row without '{field}' (a non-empty string): {rebuild}.")
            image = row["image"]
            path = os.path.join(folder, image)
            require(not os.path.isabs(image) and resolved_inside(path, [folder]) is not None,
                    f"{where} names image '{image}', outside the run folder '{folder}'; a manifest names images "
                    f"inside its own folder (images/<key>.png). Refused.")
            require(os.path.isfile(path), f"{where} names image '{image}', which does not exist in '{folder}': "
                                          f"{rebuild}.")
            check_image(path, f"{where}: image", name=image, max_pixels=MAX_PIXELS)
            rows.append(dict(row, path=path))
    return RunImages(folder, manifest, rows)
