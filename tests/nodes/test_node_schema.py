"""The node declaration (nodes/node_schema.py): what ComfyUI reads is derived from it, and saved workflows keep working.

``node_interface.json`` is every node's interface as saved workflows and API prompts see it (ids, display names,
category, function, outputs, inputs in widget order with their kinds and limits; tooltips left out). It was written
from the classes before they became declarations, so the declarations are checked against the V1 classes they
replace. After an intended interface change, rewrite it with ``FUSEDREAM_WRITE_INTERFACE=1`` and say so in the
commit: a workflow saved before the change may no longer load.
"""
import json
import os

import pytest

from fusedream_pack.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from fusedream_pack.nodes.node_inputs import checked_node_function
from fusedream_pack.nodes.node_schema import FuseDreamNode

INTERFACE = os.path.join(os.path.dirname(__file__), "node_interface.json")


def _input(declaration, listed: bool) -> dict:
    kind, options = declaration[0], declaration[1] if len(declaration) > 1 else {}
    shown = "<read when asked>" if listed else list(kind) if isinstance(kind, (list, tuple)) else kind
    return {"kind": shown, **{k: v for k, v in options.items() if k != "tooltip"}}


def interface(node_id: str) -> dict:
    cls = NODE_CLASS_MAPPINGS[node_id]
    spec = cls.INPUT_TYPES()
    declared = {**cls.INPUTS, **cls.OPTIONAL}
    return {
        "display_name": NODE_DISPLAY_NAME_MAPPINGS[node_id], "category": cls.CATEGORY, "function": cls.FUNCTION,
        "output_node": bool(cls.OUTPUT_NODE), "outputs": [list(pair) for pair in zip(cls.RETURN_NAMES, cls.RETURN_TYPES)],
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", ())),
        **{section: [[name, _input(value, callable(declared[name][0]))] for name, value in spec[section].items()]
           for section in ("required", "optional") if section in spec},
        "hidden": spec.get("hidden", {}),
    }


def _one_entry_a_line(nodes: dict) -> str:
    """JSON with one line per node field and per input, so a diff of the file names the input that changed."""
    def field(key, value):
        if key in ("required", "optional"):
            rows = ",\n".join(f"   {json.dumps(row, ensure_ascii=False)}" for row in value)
            return f"  {json.dumps(key)}: [\n{rows}\n  ]"
        return f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}"
    blocks = [f"{json.dumps(node_id)}: {{\n" + ",\n".join(field(k, v) for k, v in fields.items()) + "\n }"
              for node_id, fields in nodes.items()]
    return "{\n" + ",\n".join(blocks) + "\n}\n"


def test_every_node_keeps_the_interface_saved_workflows_rely_on():
    now = {node_id: interface(node_id) for node_id in sorted(NODE_CLASS_MAPPINGS)}
    if os.environ.get("FUSEDREAM_WRITE_INTERFACE"):
        with open(INTERFACE, "w", encoding="utf-8") as f:
            f.write(_one_entry_a_line(now))
    with open(INTERFACE, encoding="utf-8") as f:
        saved = json.load(f)
    assert sorted(now) == sorted(saved), "a node id was added or removed"
    for node_id in saved:
        assert json.loads(json.dumps(now[node_id])) == saved[node_id], node_id


def _node(**namespace):
    """A node class declared in a test, through the same base as the pack's nodes."""
    return type("Probe", (FuseDreamNode,), {"__doc__": "  A probe\n    node.  ", **namespace}, category="Tests/probe")


def _run(self, image, unique_id=None):
    return (image,)


def test_outputs_become_return_types_names_and_tooltips_in_declared_order():
    probe = _node(OUTPUTS={"image": ("IMAGE", "The image."), "count": ("INT", "How many.")},
                  INPUTS={"image": ("IMAGE", {"tooltip": "In."})}, run=checked_node_function(_run))
    assert probe.RETURN_TYPES == ("IMAGE", "INT") and probe.RETURN_NAMES == ("image", "count")
    assert probe.OUTPUT_TOOLTIPS == ("The image.", "How many.")
    assert probe.FUNCTION == "run" and probe.CATEGORY == "Tests/probe" and probe.DESCRIPTION == "A probe node."


def test_outputs_without_tooltips_declare_none():
    probe = _node(OUTPUTS={"image": "IMAGE"}, INPUTS={}, run=checked_node_function(_run))
    assert probe.RETURN_TYPES == ("IMAGE",) and not hasattr(probe, "OUTPUT_TOOLTIPS")


def test_a_choice_function_is_read_each_time_comfyui_asks():
    """Model files added while ComfyUI runs show up on the next refresh (seen failing with the list read once)."""
    listing = [["a.safetensors"]]
    probe = _node(OUTPUTS={}, INPUTS={"file": (lambda: listing[-1], {"tooltip": "A file."})},
                  run=checked_node_function(lambda self, file: ()))
    assert probe.INPUT_TYPES()["required"]["file"][0] == ["a.safetensors"]
    listing.append(["a.safetensors", "b.safetensors"])
    assert probe.INPUT_TYPES()["required"]["file"][0] == ["a.safetensors", "b.safetensors"]


def test_the_node_id_is_asked_for_exactly_when_the_function_takes_it():
    with_id = _node(OUTPUTS={}, INPUTS={}, run=checked_node_function(lambda self, unique_id=None: ()))
    without = _node(OUTPUTS={}, INPUTS={}, run=checked_node_function(lambda self: ()))
    assert with_id.INPUT_TYPES()["hidden"] == {"unique_id": "UNIQUE_ID"}
    assert "hidden" not in without.INPUT_TYPES()


def test_optional_inputs_are_declared_only_when_given():
    probe = _node(OUTPUTS={}, INPUTS={}, OPTIONAL={"image": ("IMAGE", {"tooltip": "In."})},
                  run=checked_node_function(lambda self, image=None: ()))
    assert list(probe.INPUT_TYPES()["optional"]) == ["image"]
    assert "optional" not in _node(OUTPUTS={}, INPUTS={}, run=checked_node_function(lambda self: ())).INPUT_TYPES()


@pytest.mark.parametrize("namespace", [
    {"run": lambda self: ()},  # no checked function: inputs would reach the node unchecked
    {"run": checked_node_function(lambda self: ()), "other": checked_node_function(lambda self: ())},
    {"__doc__": None, "run": checked_node_function(lambda self: ())},  # no description for the node library
])
def test_a_node_without_one_checked_function_or_a_description_is_refused_when_declared(namespace):
    with pytest.raises(TypeError, match="docstring and exactly one checked node function"):
        type("Broken", (FuseDreamNode,), {"__doc__": "Doc.", "OUTPUTS": {}, "INPUTS": {}, **namespace},
             category="Tests/probe")
