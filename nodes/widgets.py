"""Widget definitions more than one node family uses, defined once (ComfyUI's ``INPUT_TYPES`` tuples)."""
from __future__ import annotations

from ..fusedream_ops.core.precision import AUTO, PRECISION_TOOLTIP, PRECISIONS
from ..fusedream_ops.validation import ranges

HIDDEN = {"hidden": {"unique_id": "UNIQUE_ID"}}
"""The node's id in the graph: progress, previews and chart events are addressed to it."""
PRECISION = (list(PRECISIONS), {"default": AUTO, "tooltip": PRECISION_TOOLTIP})


def seed_input(drives: str = "") -> tuple:
    """The seed widget (randomised after each queue by ComfyUI); ``drives`` names what the seed draws."""
    what = f" ({drives})" if drives else ""
    return ("INT", {"default": 0, **ranges.SEED.widget(), "control_after_generate": True,
                    "tooltip": f"Random seed{what}; the same seed reproduces the same result."})
