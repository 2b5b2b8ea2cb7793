"""One job = one image: a prompt, its id, its seed and the file key it is stored under.

Seeds come from (run seed, prompt id, image index) through SHA-256, so an image depends only on its own row and
the run settings: never on the number of workers, the order jobs finish in, or which rows came before it.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..core.errors import require
from .prompts import PromptItem

SEED_BITS = 31
"""Seeds fit in a signed 32-bit int, so every RNG the ops or a user's tools use accepts them."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


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
    """``prompt_id`` if it is file-safe, else a safe version with a short hash of the original (no collisions)."""
    safe = _UNSAFE.sub("_", prompt_id)[:80]
    if safe == prompt_id and not safe.startswith("."):
        return safe
    return f"{safe.lstrip('.')}-{hashlib.sha256(prompt_id.encode()).hexdigest()[:8]}"


def plan_jobs(items: list[PromptItem], run_seed: int, images_per_prompt: int = 1) -> list[Job]:
    """Every (prompt, image) of the run in file order. A seed given in the file is used for image 0 and
    counts up for the others."""
    require(images_per_prompt >= 1, f"images per prompt must be at least 1, got {images_per_prompt}.")
    jobs = []
    for item in items:
        key = file_key(item.id)
        for index in range(images_per_prompt):
            seed = derive_seed(run_seed, item.id, index) if item.seed is None else item.seed + index
            jobs.append(Job(f"{key}__{index}", item.id, item.prompt, seed, index))
    return jobs
