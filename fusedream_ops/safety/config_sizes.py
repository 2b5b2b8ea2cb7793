"""A config's size fields compared with the checkpoint's tensor shapes before anything is built.

Each check names a config field and where the checkpoint shows the same size: one axis of one tensor, or the number
of numbered blocks under a key prefix (``visual.transformer.resblocks.0.``, ``.1.`` …). The shapes come from a
safetensors header or a loaded state dict; nothing is allocated. A check whose tensor is absent, or whose field is
not a plain integer, is left to the build (which then runs under :func:`~.meta_budget.build_budget`).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Mapping, Sequence

from ..core.errors import FuseDreamError


@dataclass(frozen=True)
class SizeCheck:
    field: str
    """The config field, as the user finds it in the file (``vision_cfg.layers``)."""
    value: object
    key: str
    """A tensor name, or a block prefix ending in ``.`` when ``axis`` is None."""
    axis: int | None = None


def block_count(shapes: Mapping[str, tuple], prefix: str) -> int | None:
    """Number of numbered blocks ``prefix<i>.…`` in ``shapes``; None when there is none."""
    found = {k[len(prefix):].split(".")[0] for k in shapes if k.startswith(prefix)}
    found = {i for i in found if i.isdigit()}
    return len(found) if found else None


def mismatched_sizes(shapes: Mapping[str, tuple], checks: Sequence[SizeCheck]) -> list[str]:
    """``'field is X but the checkpoint has Y (where)'`` for every check that fails."""
    wrong = []
    for check in checks:
        if isinstance(check.value, bool) or not isinstance(check.value, numbers.Integral):
            continue
        if check.axis is None:
            found, where = block_count(shapes, check.key), f"blocks {check.key}*"
        else:
            shape = shapes.get(check.key)
            found = shape[check.axis] if shape is not None and -len(shape) <= check.axis < len(shape) else None
            where = f"{check.key} {tuple(shape) if shape is not None else ''}"
        if found is not None and int(check.value) != int(found):
            wrong.append(f"{check.field} is {check.value} but the checkpoint has {found} ({where})")
    return wrong


def require_sizes_match(source: str, shapes: Mapping[str, tuple], checks: Sequence[SizeCheck]) -> None:
    """Refuse ``source`` (a config file) naming every size field that does not match the checkpoint."""
    wrong = mismatched_sizes(shapes, checks)
    if wrong:
        raise FuseDreamError(f"{source} does not match its checkpoint: {'; '.join(wrong)}. The config belongs to "
                             f"another model (or was edited); use the one that came with the weights.")
