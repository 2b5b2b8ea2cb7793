"""A node's arguments checked against the ranges its own ``INPUT_TYPES`` declares, and its outputs for NaN.

ComfyUI's own check of a prompt compares numbers with ``<``/``>``, which NaN passes, and API clients or scripts can
call a node function directly; :func:`checked_node_function` runs the same declaration as a gate before the node
does any work, so the widget ranges and the validation cannot drift apart. After the node ran, no output may hold
NaN/inf: the error names the output (and a model weight holding NaN when one does).
"""
from __future__ import annotations

import functools
import inspect

import torch

from ..fusedream_ops.core.errors import FuseDreamError, require
from ..fusedream_ops.validation.finite import first_nonfinite, nonfinite_weight
from ..fusedream_ops.validation.images import require_image, require_mask
from ..fusedream_ops.validation.names import require_text
from ..fusedream_ops.validation.numbers import require_number

WIDGETS = ("INT", "FLOAT", "BOOLEAN", "STRING")
"""Inputs typed on the node: always present when ComfyUI runs it (a connection may be absent, a widget never)."""


def check_value(name: str, kind, options: dict, value) -> None:
    """One input against its declaration ``(kind, options)`` from ``INPUT_TYPES``."""
    options = options or {}
    if isinstance(kind, (list, tuple)):
        choices = list(kind)
        require(bool(choices), f"{name} {value!r} is not available: there is nothing to choose from (its model "
                               f"folder is empty or missing).")
        if value not in choices:
            shown = ", ".join(repr(c) for c in choices[:12]) + (", ..." if len(choices) > 12 else "")
            raise FuseDreamError(f"{name} must be one of {shown}; got {value!r}.")
    elif kind == "INT":
        require_number(name, value, options.get("min"), options.get("max"), integer=True)
    elif kind == "FLOAT":
        require_number(name, value, options.get("min"), options.get("max"))
    elif kind == "BOOLEAN":
        require(isinstance(value, bool), f"{name} must be true or false, got {value!r}.")
    elif kind == "STRING":
        require_text(value, name, multiline=bool(options.get("multiline", False)))
    elif kind == "IMAGE":
        require_image(value, name)
    elif kind == "MASK":
        require_mask(value, name)
    else:
        require(value is not None, f"{name} is not connected: connect a {kind} output.")
        if isinstance(value, torch.Tensor):
            require(value.numel() > 0, f"{name} is empty (shape {tuple(value.shape)}): connect a non-empty {kind}.")
        where = first_nonfinite(value, name)
        require(where is None, f"{where} holds NaN or infinite values: check the node that made it.")


def check_node_inputs(node_class, values: dict) -> None:
    """Every declared input present in ``values`` against its declaration (absent optional inputs are skipped)."""
    spec = node_class.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, declaration in (spec.get(section) or {}).items():
            kind, options = declaration[0], declaration[1] if len(declaration) > 1 else {}
            widget = isinstance(kind, (list, tuple)) or kind in WIDGETS
            if name not in values or (section == "optional" and values[name] is None and not widget):
                require(section == "optional", f"the required input {name} is missing.")
                continue
            check_value(name, kind, options, values[name])


def check_node_outputs(node_class, result, inputs: dict) -> None:
    """No output of ``result`` (a tuple or ``{"result": tuple}``) holds NaN/inf; the error names the output."""
    values = result.get("result", ()) if isinstance(result, dict) else result
    names = getattr(node_class, "RETURN_NAMES", None) or getattr(node_class, "RETURN_TYPES", ())
    for i, value in enumerate(values or ()):
        if isinstance(value, torch.nn.Module):
            continue
        name = names[i] if i < len(names) else f"output {i + 1}"
        where = first_nonfinite(value, f"the output '{name}'")
        if where is None:
            continue
        weight = nonfinite_weight(*inputs.values())
        cause = (f" The model weight {weight} holds NaN/inf: the checkpoint is broken." if weight else
                 " Its inputs are finite, so the computation itself overflowed (a learning rate or guidance too large, "
                 "or a broken model).")
        raise FuseDreamError(f"{node_class.__name__}: {where} holds NaN or infinite values.{cause}")


def check_loaded_models(node_class, result) -> None:
    """A loader's models must not hold NaN/inf weights (checked once, when loaded)."""
    values = result.get("result", ()) if isinstance(result, dict) else result
    weight = nonfinite_weight(*(values or ()))
    require(weight is None, f"{node_class.__name__}: the model weight {weight} holds NaN or infinite values: the "
                            f"checkpoint is broken; download it again.")


def checked_node_function(method, loads_models: bool = False):
    """Decorate a node's ``FUNCTION``: inputs checked against ``INPUT_TYPES`` before it runs, outputs after (and,
    with ``loads_models``, the weights of the models it returns)."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as exc:
            raise FuseDreamError(f"{type(self).__name__}: {exc}.") from None
        bound.apply_defaults()
        inputs = {k: v for k, v in bound.arguments.items() if k != "self"}
        check_node_inputs(type(self), inputs)
        result = method(self, *args, **kwargs)
        check_node_outputs(type(self), result, inputs)
        if loads_models:
            check_loaded_models(type(self), result)
        return result

    run.checks_node_inputs = True
    return run


def is_node_function(value) -> bool:
    """Whether ``value`` is a method wrapped by :func:`checked_node_function` (the node's ``FUNCTION``)."""
    return getattr(value, "checks_node_inputs", False) is True


def checked_loader_function(method):
    """:func:`checked_node_function` for a loader: also refuses models whose weights hold NaN/inf."""
    return checked_node_function(method, loads_models=True)
