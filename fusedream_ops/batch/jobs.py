"""One job = one image: a prompt, its id, its seed and the file key it is stored under.

Seeds come from (run seed, prompt id, image index) through SHA-256, so an image depends only on its own row and
the run settings: never on the number of workers, the order jobs finish in, or which rows came before it.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..core.errors import require
from ..validation.numbers import require_number
from ..validation.ranges import SEED
from .prompts import MAX_IMAGES, PromptItem

SEED_BITS = 31
"""Seeds fit in a signed 32-bit int, so every RNG the ops or a user's tools use accepts them."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_HASHED = re.compile(r"-[0-9a-f]{8}$")


@dataclass(frozen=True)
class Job:
    key: str
    """File-safe, unique name of the image: ``<id>__<index>``."""
    id: str
    prompt: str
    seed: int
    index: int
    """Which image of its prompt (0 … images_per_prompt − 1)."""


def derive_seed(run_seed: int, prompt_id: str, index: int) -> int:
    digest = hashlib.sha256(f"{int(run_seed)}\x1f{prompt_id}\x1f{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (1 << SEED_BITS)


def file_key(prompt_id: str) -> str:
    """``prompt_id`` itself if it is file-safe and does not end like a hashed key, else its safe form plus a short
    hash of the original. Kept ids never end in ``-<8 hex digits>`` and hashed ones always do, so an id such as
    ``a_b-c8687a08`` cannot take the file of ``a b`` (whose hashed key it spells)."""
    safe = _UNSAFE.sub("_", prompt_id)[:80]
    if safe == prompt_id and not safe.startswith(".") and not _HASHED.search(safe):
        return safe
    return f"{safe.lstrip('.')}-{hashlib.sha256(prompt_id.encode()).hexdigest()[:8]}"


def _check_keys(items: list[PromptItem]) -> list[str]:
    """One file per prompt: two ids whose keys are equal, or equal but for case (one file on macOS and Windows
    disks), are refused by name before anything is made."""
    keys, seen = [], {}
    for item in items:
        key = file_key(item.id)
        other = seen.setdefault(key.casefold(), item.id)
        require(other == item.id, f"prompt ids '{other}' and '{item.id}' would share the image file '{key}' (file "
                                  f"names ignore case on some disks); give one of them another id.")
        keys.append(key)
    return keys


def plan_jobs(items: list[PromptItem], run_seed: int, images_per_prompt: int = 1) -> list[Job]:
    """Every (prompt, image) of the run in file order. A seed given in the file is used for image 0 and counts up
    for the others. At most :data:`MAX_IMAGES` jobs; the seeds stay within the nodes' seed range."""
    images_per_prompt = require_number("images per prompt", images_per_prompt, 1, MAX_IMAGES, integer=True)
    run_seed = SEED.check("run seed", run_seed)
    require(len(items) * images_per_prompt <= MAX_IMAGES,
            f"{len(items)} prompts x {images_per_prompt} images per prompt = {len(items) * images_per_prompt} images; "
            f"a run makes at most {MAX_IMAGES}: split the prompt file into several runs.")
    jobs = []
    for item, key in zip(items, _check_keys(items)):
        if item.seed is not None:
            SEED.check(f"the seed of prompt '{item.id}' plus {images_per_prompt - 1} (its last image)",
                       item.seed + images_per_prompt - 1)
        for index in range(images_per_prompt):
            seed = derive_seed(run_seed, item.id, index) if item.seed is None else item.seed + index
            jobs.append(Job(f"{key}__{index}", item.id, item.prompt, seed, index))
    return jobs
