"""Non-finite values: a NaN/inf tensor, score or output stops the work with an error naming where it appeared.

When an output is not finite the usual culprit is a model whose weights hold NaN; :func:`nonfinite_weight` finds the
first such weight so the error can name it (it runs only after something went wrong, so it costs nothing otherwise).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Optional

import torch

from ..core.errors import FuseDreamError


def is_finite(value) -> bool:
    """True for a finite number or a tensor (any dtype) without NaN/inf; True for anything else."""
    if isinstance(value, torch.Tensor):
        if not (value.is_floating_point() or value.is_complex()):
            return True
        return bool(torch.isfinite(value).all()) if value.numel() else True
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def tensors_in(value, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(path, tensor)`` for ``value`` if it is a tensor, or the tensor fields of a dataclass (one level)."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            item = getattr(value, f.name, None)
            if isinstance(item, torch.Tensor):
                yield f"{prefix}.{f.name}" if prefix else f.name, item


def first_nonfinite(value, name: str) -> Optional[str]:
    """The name of the first non-finite part of ``value`` (``name``, ``name.z``…), or None when it is finite."""
    if isinstance(value, float) and not math.isfinite(value):
        return name
    for path, tensor in tensors_in(value, name):
        if not is_finite(tensor):
            return path
    return None


def modules_in(value, depth: int = 3, seen: Optional[set] = None) -> Iterator[torch.nn.Module]:
    """The torch modules held by ``value``: itself, or attributes of the pack's own objects (a generator, a
    scorer, an objective's scorer…), ``depth`` levels deep."""
    seen = set() if seen is None else seen
    if id(value) in seen or depth < 0:
        return
    seen.add(id(value))
    if isinstance(value, torch.nn.Module):
        yield value
        return
    module = type(value).__module__ or ""
    if "fusedream_ops" not in module:
        return
    for item in vars(value).values() if hasattr(value, "__dict__") else ():
        yield from modules_in(item, depth - 1, seen)


def nonfinite_weight(*values) -> Optional[str]:
    """``"'<parameter name>' of <ModelClass>"`` for the first weight holding NaN/inf in the models held by
    ``values``, or None."""
    for value in values:
        for module in modules_in(value):
            for pname, tensor in module.named_parameters():  # buffers may hold -inf on purpose (attention masks)
                if not is_finite(tensor):
                    return f"'{pname}' of {type(module).__name__}"
    return None


def require_finite(name: str, value, *models, hint: str = "") -> None:
    """Stop with an error naming ``name`` (and the first non-finite weight of ``models``) if ``value`` holds
    NaN/inf."""
    where = first_nonfinite(value, name)
    if where is None:
        return
    weight = nonfinite_weight(*models)
    cause = (f" The model weight {weight} holds NaN/inf: the checkpoint is broken." if weight else
             f" {hint}" if hint else "")
    raise FuseDreamError(f"{where} holds NaN or infinite values.{cause}")
