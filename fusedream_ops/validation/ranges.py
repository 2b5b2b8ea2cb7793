"""The valid values of every numeric setting: one table read by the nodes' widgets, ``python -m fusedream_ops`` and
batch runs, so a value the UI refuses is refused on the command line too, with the same words.

Each entry is keyed by the name the node uses; :meth:`Range.widget` gives the ``min``/``max`` of its widget and
:meth:`Range.check` refuses NaN, infinities, non-integers and out-of-range values by name
(:func:`.numbers.require_number`).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ovi.optimize import MAX_TOKENS
from .numbers import describe_range, require_number


@dataclass(frozen=True)
class Range:
    low: int | float
    high: int | float
    integer: bool

    def check(self, name: str, value):
        """``value`` as an int (integer settings) or number, else a ``[FuseDream]`` error naming ``name``."""
        return require_number(name, value, self.low, self.high, integer=self.integer)

    def widget(self) -> dict:
        """``{"min": …, "max": …}`` for a node's ``INT``/``FLOAT`` widget."""
        return {"min": self.low, "max": self.high}

    def describe(self) -> str:
        return describe_range(self.low, self.high, self.integer)


def _int(low: int, high: int) -> Range:
    return Range(low, high, True)


def _float(low: float, high: float) -> Range:
    return Range(float(low), float(high), False)


SEED = _int(0, 0xFFFF_FFFF_FFFF_FFFF)
"""Any seed ComfyUI's seed widget can hold (torch seeds its generators with 64-bit values)."""

FUSEDREAM = {
    "candidates": _int(1, 1_000_000), "k": _int(1, 1000), "chunk": _int(0, 512), "copies": _int(1, 512),
    "steps": _int(1, 100_000), "lr": _float(1e-6, 1.0), "latent_noise": _float(0, 1),
}
"""Latent Sampler (candidates), Top-k Init (k, chunk), AugCLIP Objective (copies), Basis Optimizer (the rest)."""

CLIPAG_SYNTHESIS = {
    "size": _int(32, 1024), "steps": _int(1, 10_000), "lr": _float(1e-5, 1.0), "views": _int(1, 256),
    "patches": _int(0, 256), "patch_weight": _float(0, 100), "input_noise": _float(0, 1),
    "grad_clip": _float(0, 100), "threshold": _float(0, 1), "weight_decay": _float(0, 1),
}
"""Generator-Free Synthesis (CLIPAG)."""

CLIPAG_SYNTHESIS_PYTHON_ONLY = {"patch_fraction": _float(0.01, 1), "global_weight": _float(0, 100)}
"""Pixel-synthesis settings the node does not show (Python API and batch runs): crop side / image side, and the
weight of the whole-image loss (the node's is 1)."""

OVI = {"num_tokens": _int(1, MAX_TOKENS), "steps": _int(1, 100_000), "lr": _float(1e-5, 10)}
"""OVI Prior."""

KANDINSKY_DECODER = {"steps": _int(1, 1000), "guidance": _float(0, 30), "width": _int(64, 4096),
                     "height": _int(64, 4096)}
"""Kandinsky 2.2 Decoder."""
