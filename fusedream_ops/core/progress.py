"""How long-running ops report progress, previews and series values, and how they get cancelled.

An op takes ``on_step: StepCallback | None`` and calls it once per step with a :class:`Step`. The callback
may raise to cancel: the exception propagates out of the op at that step (ComfyUI's interrupt does exactly this).
Nothing here knows about ComfyUI.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch


@dataclass
class Step:
    step: int
    """Steps completed so far, 1..total."""
    total: int
    values: dict[str, float] = field(default_factory=dict)
    """Named series at this step, e.g. ``{"augclip": 0.31, "lpips": 0.42}``."""
    image: Optional[torch.Tensor] = None
    """The current iterate as images ``[B,3,H,W]`` in 0..1 (detached), when the op has one."""


StepCallback = Callable[[Step], None]


def report(on_step: Optional[StepCallback], step: int, total: int, values=None, image=None) -> None:
    """Call ``on_step`` if there is one; ``image`` is detached so callbacks can keep it."""
    if on_step is not None:
        on_step(Step(step, total, dict(values or {}), None if image is None else image.detach()))
