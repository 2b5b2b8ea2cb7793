"""One declaration per node, from which the V1 attributes ComfyUI reads are derived (as V3's ``define_schema``).

A node class states its category (and ``output_node``) in the class line, its description as the docstring, its
outputs as ``OUTPUTS`` (name -> type, or name -> ``(type, tooltip)``) and its sockets and widgets as ``INPUTS`` and
``OPTIONAL`` in widget order; a choice list that depends on the model folders is given as a function, called each
time ComfyUI asks. The method wrapped by :func:`~.node_inputs.checked_node_function` is the node's ``FUNCTION``, and a
``unique_id`` parameter asks ComfyUI for the node's id (the hidden input ``UNIQUE_ID``). Saved workflows only see the
node ids, types and widget order, which this derivation keeps exactly as declared.
"""
from __future__ import annotations

import inspect

from .node_inputs import is_node_function


class FuseDreamNode:
    """Base of every FuseDream node; subclasses declare, this class derives ``CATEGORY``, ``DESCRIPTION``,
    ``FUNCTION``, ``RETURN_TYPES``, ``RETURN_NAMES``, ``OUTPUT_TOOLTIPS`` and ``INPUT_TYPES``."""

    OUTPUTS: dict = {}
    INPUTS: dict = {}
    OPTIONAL: dict = {}

    def __init_subclass__(cls, category: str, output_node: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        functions = [name for name, value in vars(cls).items() if is_node_function(value)]
        if len(functions) != 1 or not cls.__doc__:
            raise TypeError(f"{cls.__name__}: a node needs a docstring and exactly one checked node function, "
                            f"found {functions}.")
        cls.CATEGORY = category
        cls.OUTPUT_NODE = output_node
        cls.DESCRIPTION = " ".join(inspect.cleandoc(cls.__doc__).split())
        cls.FUNCTION = functions[0]
        outputs = {name: kind if isinstance(kind, tuple) else (kind, "") for name, kind in cls.OUTPUTS.items()}
        cls.RETURN_TYPES = tuple(kind for kind, _ in outputs.values())
        cls.RETURN_NAMES = tuple(outputs)
        if any(tip for _, tip in outputs.values()):
            cls.OUTPUT_TOOLTIPS = tuple(tip for _, tip in outputs.values())
        cls.WANTS_UNIQUE_ID = "unique_id" in inspect.signature(getattr(cls, cls.FUNCTION)).parameters

    @classmethod
    def INPUT_TYPES(cls):
        spec = {"required": _listed_now(cls.INPUTS)}
        if cls.OPTIONAL:
            spec["optional"] = _listed_now(cls.OPTIONAL)
        if cls.WANTS_UNIQUE_ID:
            spec["hidden"] = {"unique_id": "UNIQUE_ID"}
        return spec


def _listed_now(inputs: dict) -> dict:
    """The declaration with every choice function replaced by its current list (model folders change at run time)."""
    return {name: (declaration[0](), *declaration[1:]) if callable(declaration[0]) else declaration
            for name, declaration in inputs.items()}
