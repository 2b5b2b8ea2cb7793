"""Batch runs: many prompts → one PNG per (prompt, seed) + a manifest, in-process or on Ray, resumable.

``python -m fusedream_ops.batch PROMPTS OUT --method fusedream ...`` or :func:`run_batch` (see :mod:`.run`).
Ray is imported only when ``ray=`` is given.
"""
from .jobs import Job, derive_seed, plan_jobs
from .methods import METHODS, MethodSpec, load_method
from .prompts import PromptItem, read_prompts
from .run import BatchSummary, run_batch
from .store import read_manifest

__all__ = ["BatchSummary", "Job", "METHODS", "MethodSpec", "PromptItem", "derive_seed", "load_method", "plan_jobs",
           "read_manifest", "read_prompts", "run_batch"]
