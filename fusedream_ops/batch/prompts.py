"""The prompt file of a batch run: plain text (one prompt per line), JSONL or CSV (columns id, prompt, seed).

A text line is one prompt; its id is its line number (``00001`` …). JSONL rows and CSV rows need ``prompt``;
``id`` defaults to the row number and ``seed`` (an integer) is optional. Ids must be unique: they name the images
and key the manifest, so a restarted run finds what it already made.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

from ..core.errors import FuseDreamError, require
from ..core.json_lines import json_lines
from ..validation.names import require_text
from ..validation.prompts import require_prompt
from ..validation.ranges import SEED

MAX_IMAGES = 1_000_000
"""Images one run makes at most (prompts x images per prompt), and so prompts a file may hold: the prompts, the
plan and the records are kept in memory, about 1 KB per image."""


@dataclass(frozen=True)
class PromptItem:
    id: str
    prompt: str
    seed: int | None = None
    """A seed given in the file; None lets the run derive one from (run seed, id)."""


def _item(row: dict, number: int, where: str) -> PromptItem:
    require(isinstance(row, dict), f"{where}: a row must be an object with a 'prompt', got {row!r}.")
    prompt = row.get("prompt")
    require(isinstance(prompt, str) and prompt.strip() != "",
            f"{where}: 'prompt' is missing or empty (columns: id, prompt, seed; prompt is required).")
    require_prompt(prompt, f"{where}: prompt")
    raw_id = row.get("id")
    item_id = f"{number:05d}" if raw_id is None or str(raw_id).strip() == "" else str(raw_id).strip()
    require_text(item_id, f"{where}: id")
    seed = row.get("seed")
    if seed is not None and str(seed).strip() != "":
        try:
            seed = int(str(seed).strip())
        except ValueError:
            raise FuseDreamError(f"{where}: seed must be {SEED.describe()}, got {seed!r}.") from None
        seed = SEED.check(f"{where}: seed", seed)
    else:
        seed = None
    return PromptItem(item_id, prompt.strip(), seed)


def read_prompts(path: str) -> list[PromptItem]:
    """The prompts of ``path`` (``.txt``, ``.jsonl``/``.json``, ``.csv``) in file order."""
    require(os.path.isfile(path), f"prompt file '{path}' does not exist.")
    ext = os.path.splitext(path)[1].lower()
    items: list[PromptItem] = []
    def add(item: PromptItem) -> None:
        require(len(items) < MAX_IMAGES, f"prompt file '{path}' holds more than {MAX_IMAGES} prompts, the most one "
                                         f"run makes; split it into several files and runs.")
        items.append(item)

    with open(path, encoding="utf-8", newline="") as f:
        if ext in (".jsonl", ".json"):
            for number, row, error in json_lines(f):
                if error is not None:
                    raise FuseDreamError(f"{path} line {number} is not JSON ({error.msg}); write one object per "
                                         f"line, e.g. {{\"id\": \"1\", \"prompt\": \"a red bus\", \"seed\": 3}}.")
                add(_item(row, len(items) + 1, f"{path} line {number}"))
        elif ext == ".csv":
            reader = csv.DictReader(f)
            require(reader.fieldnames is not None and "prompt" in reader.fieldnames,
                    f"{path}: the CSV header must name a 'prompt' column (optional: id, seed), got "
                    f"{reader.fieldnames}.")
            for number, row in enumerate(reader, start=2):
                add(_item(row, len(items) + 1, f"{path} line {number}"))
        else:
            for line in f:
                if line.strip():
                    add(PromptItem(f"{len(items) + 1:05d}", line.strip()))
    require(bool(items), f"prompt file '{path}' holds no prompt.")
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        require(item.id not in seen, f"{path}: id '{item.id}' is used twice (rows {seen.get(item.id, 0) + 1} "
                                     f"and {index + 1}); every prompt needs its own id.")
        seen[item.id] = index
    return items
