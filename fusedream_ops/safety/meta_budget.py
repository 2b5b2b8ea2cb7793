"""A model a config describes is built (on the meta device) only as far as its checkpoint can fill it.

Comparing a config with a checkpoint needs the model's shapes, and building even a meta model of a config claiming
100,000 layers takes minutes and gigabytes of Python objects. So the build runs under a budget taken from the
checkpoint's header: every parameter, buffer and sub-module registered while it runs (in this thread) is counted,
and the build stops with an error as soon as it passes twice what the weights hold (plus a margin for buffers and
containers). A config that fits its checkpoint never comes near the limit; one that asks for the impossible fails
after building about twice the real model, naming the file, the part being built and the config's largest sizes.
"""
from __future__ import annotations

import contextlib
import math
import threading
from typing import Iterator, Mapping

import torch
from torch.nn.modules import module as torch_module

from ..core.errors import FuseDreamError

UNBACKED_VALUES = 2 ** 20
"""Values a model may register beyond twice its checkpoint's (non-persistent buffers such as position ids)."""
UNBACKED_MODULES = 256
MODULES_PER_TENSOR = 4
"""A module holds at least one tensor or is one of a few containers/activations per layer: 4 per tensor is ample."""


def header_size(shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, int]:
    """``(values, tensors)`` of a checkpoint given as tensor shapes (a safetensors header or a state dict's)."""
    return sum(math.prod(s) for s in shapes.values()), len(shapes)


def shapes_of(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def size_fields(config, limit: int = 6) -> str:
    """The largest integer fields of a config (a dict or an object with ``to_dict``/``__dict__``), for messages."""
    if not isinstance(config, Mapping):
        config = config.to_dict() if hasattr(config, "to_dict") else vars(config)
    found = []

    def visit(value, name):
        if isinstance(value, Mapping):
            for k, v in value.items():
                visit(v, f"{name}.{k}" if name else str(k))
        elif isinstance(value, (list, tuple)):
            if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                found.append((max(value) * len(value), f"{name}={list(value)[:6]}{'…' if len(value) > 6 else ''}"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found.append((value, f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"))

    visit(config, "")
    found.sort(key=lambda x: -x[0])
    return ", ".join(text for _, text in found[:limit])


@contextlib.contextmanager
def build_budget(shapes: Mapping[str, tuple[int, ...]], source: str, config=None) -> Iterator[None]:
    """Inside this block, building modules in this thread stops with a :class:`FuseDreamError` once they register
    more than twice the values (or four times the tensors) of the checkpoint whose tensor ``shapes`` are given.
    ``source`` names the config file and ``config`` (optional) is shown by its largest size fields."""
    values, tensors = header_size(shapes)
    max_values = 2 * values + UNBACKED_VALUES
    max_modules = MODULES_PER_TENSOR * tensors + UNBACKED_MODULES
    thread = threading.get_ident()
    count = {"values": 0, "modules": 0}

    def refuse(kind: str, module, name: str):
        fields = f" Its largest sizes: {size_fields(config)}." if config is not None else ""
        raise FuseDreamError(f"{source} describes a model larger than its checkpoint: building it passed {kind} "
                             f"(the checkpoint holds {values:,} values in {tensors:,} tensors) at "
                             f"{type(module).__name__}.{name}. A size field (layers, width, heads, vocabulary, "
                             f"positions) does not match the weights.{fields}")

    def on_tensor(module, name, tensor):
        if threading.get_ident() == thread and tensor is not None:
            count["values"] += tensor.numel()
            if count["values"] > max_values:
                refuse(f"{max_values:,} values", module, name)

    def on_module(module, name, submodule):
        if threading.get_ident() == thread and submodule is not None:
            count["modules"] += 1
            if count["modules"] > max_modules:
                refuse(f"{max_modules:,} modules", module, name)

    handles = [torch_module.register_module_parameter_registration_hook(on_tensor),
               torch_module.register_module_buffer_registration_hook(on_tensor),
               torch_module.register_module_module_registration_hook(on_module)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
