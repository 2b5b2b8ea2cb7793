"""UI-format (litegraph) workflows: which inputs are widgets, checking a saved workflow, building one.

A node's ``widgets_values`` hold its widget inputs in INPUT_TYPES order (required, then optional); an INT with
``control_after_generate`` is followed by the control value ("fixed", "randomize", ...). Linked inputs are listed in
``inputs`` with a link id; ``links`` rows are ``[id, from_node, from_slot, to_node, to_slot, type]``.
"""
from __future__ import annotations

import json
import os

from testkit import ROOT

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
STOCK_SNAPSHOT = os.path.join(ROOT, "tests", "e2e", "object_info_stock.json")
with open(STOCK_SNAPSHOT, encoding="utf-8") as _f:
    STOCK_NODES = set(json.load(_f)) | {"SaveAnimatedWEBP", "Note"}
"""ComfyUI's own nodes a template may use; tests/e2e/test_template_object_info.py checks them against /object_info."""
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")


def _inputs(cls) -> list[tuple[str, object, dict]]:
    spec = cls.INPUT_TYPES()
    rows = []
    for section in ("required", "optional"):
        for name, value in spec.get(section, {}).items():
            kind = value[0]
            options = value[1] if len(value) > 1 else {}
            rows.append((name, kind, options))
    return rows


def is_widget(kind, options) -> bool:
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def widget_inputs(cls) -> list[tuple[str, object, dict]]:
    return [(n, k, o) for n, k, o in _inputs(cls) if is_widget(k, o)]


def widget_defaults(cls) -> dict:
    """Every widget input's default value (a combo's first option when it has no default)."""
    return {name: options.get("default", kind[0] if isinstance(kind, list) and kind else None)
            for name, kind, options in widget_inputs(cls)}


def run_node(node_id: str, **inputs) -> dict:
    """Run a node of the pack the way ComfyUI does (widget defaults, under ``torch.inference_mode()``) and check
    that it returns one value per RETURN_TYPE, stock types in their stock form. Returns ``{"result": ..., "ui"?}``."""
    import torch

    from fusedream_pack.nodes import NODE_CLASS_MAPPINGS

    cls = NODE_CLASS_MAPPINGS[node_id]
    values = {**widget_defaults(cls), **inputs}
    with torch.inference_mode():
        out = getattr(cls(), cls.FUNCTION)(**values)
    out = out if isinstance(out, dict) else {"result": out}
    result = out["result"]
    assert len(result) == len(cls.RETURN_TYPES), node_id
    is_list = getattr(cls, "OUTPUT_IS_LIST", (False,) * len(cls.RETURN_TYPES))
    for value, kind, listed in zip(result, cls.RETURN_TYPES, is_list):
        for item in value if listed else [value]:
            _check_output(node_id, kind, item)
    return out


def _check_output(node_id: str, kind: str, value) -> None:
    """One output value in its stock form (an OUTPUT_IS_LIST output is checked item by item)."""
    import torch

    if kind == "IMAGE":
        assert value.ndim == 4 and value.shape[-1] == 3 and value.dtype == torch.float32, node_id
        assert 0 <= value.min() and value.max() <= 1 and value.device.type == "cpu", node_id
    elif kind == "MASK":
        assert value.ndim in (2, 3) and 0 <= value.min() and value.max() <= 1, node_id
    elif kind == "FLOAT":
        assert isinstance(value, float), node_id
    elif kind in ("STRING", "INT"):
        assert isinstance(value, str if kind == "STRING" else int), node_id




def socket_inputs(cls) -> list[tuple[str, object]]:
    return [(n, k) for n, k, o in _inputs(cls) if not is_widget(k, o)]


def widget_values_problems(cls, values: list) -> list[str]:
    """Why ``values`` are not valid widgets_values for ``cls`` (empty when they are)."""
    problems, i = [], 0
    for name, kind, options in widget_inputs(cls):
        if i >= len(values):
            return problems + [f"missing value for '{name}'"]
        value = values[i]
        i += 1
        if isinstance(kind, list):
            if value not in kind:
                problems.append(f"'{name}' = {value!r} is not one of its options")
        elif kind == "INT":
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"'{name}' = {value!r} is not an int")
            elif not options.get("min", value) <= value <= options.get("max", value):
                problems.append(f"'{name}' = {value} is outside [{options.get('min')}, {options.get('max')}]")
            if options.get("control_after_generate"):
                if i >= len(values) or values[i] not in CONTROL_VALUES:
                    problems.append(f"'{name}' should be followed by a control value {CONTROL_VALUES}")
                i += 1
        elif kind == "FLOAT":
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                problems.append(f"'{name}' = {value!r} is not a number")
            elif not options.get("min", value) <= value <= options.get("max", value):
                problems.append(f"'{name}' = {value} is outside [{options.get('min')}, {options.get('max')}]")
        elif kind == "STRING" and not isinstance(value, str):
            problems.append(f"'{name}' = {value!r} is not a string")
        elif kind == "BOOLEAN" and not isinstance(value, bool):
            problems.append(f"'{name}' = {value!r} is not a boolean")
    if i != len(values):
        problems.append(f"{len(values) - i} extra widget values")
    return problems


def workflow_problems(workflow: dict, mappings: dict) -> list[str]:
    """Everything that would stop ComfyUI from loading and queueing ``workflow`` as saved."""
    problems = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for key in ("last_node_id", "last_link_id", "links", "nodes", "version"):
        if key not in workflow:
            problems.append(f"workflow has no '{key}'")
    for node in workflow["nodes"]:
        cls = mappings.get(node["type"])
        where = f"node {node['id']} ({node['type']})"
        if cls is None:
            if node["type"] not in STOCK_NODES:
                problems.append(f"{where}: unknown node type")
            continue
        problems += [f"{where}: {p}" for p in widget_values_problems(cls, node.get("widgets_values", []))]
        linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
        required = cls.INPUT_TYPES().get("required", {})
        for name, kind in socket_inputs(cls):
            if name in required and name not in linked:
                problems.append(f"{where}: required input '{name}' is not connected")
        outputs = [o["type"] for o in node.get("outputs", [])]
        if outputs != list(cls.RETURN_TYPES):
            problems.append(f"{where}: outputs {outputs} differ from RETURN_TYPES {list(cls.RETURN_TYPES)}")
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        if src not in nodes or dst not in nodes:
            problems.append(f"link {link_id} joins a missing node")
            continue
        src_out = nodes[src]["outputs"][src_slot]
        dst_in = nodes[dst]["inputs"][dst_slot]
        if link_id not in (src_out.get("links") or []) or dst_in.get("link") != link_id:
            problems.append(f"link {link_id} is not recorded on both ends")
        if not (src_out["type"] == dst_in["type"] == kind):
            problems.append(f"link {link_id} joins {src_out['type']} to {dst_in['type']} as {kind}")
    return problems


def build_workflow(mappings: dict, nodes: list[dict], links: list[tuple]) -> dict:
    """A UI-format workflow from ``nodes`` ``{"id", "type", "pos", "widgets": {name: value}, "title"?}`` and
    ``links`` ``(from_id, from_output_name, to_id, to_input_name)``; widgets not given take their defaults."""
    from_types = {"SaveImage": ((("images", "IMAGE"),), (), [("filename_prefix", "FuseDream")]),
                  "PreviewImage": ((("images", "IMAGE"),), (), [])}
    out, link_rows = [], []
    by_id = {}
    for spec in nodes:
        cls = mappings.get(spec["type"])
        if cls is None:
            sockets, outputs, widgets = from_types[spec["type"]]
            inputs = [{"name": n, "type": t, "link": None} for n, t in sockets]
            values = [spec.get("widgets", {}).get(n, v) for n, v in widgets]
            output_rows = []
        else:
            inputs = [{"name": n, "type": k, "link": None} for n, k in socket_inputs(cls)]
            values = []
            defaults = widget_defaults(cls)
            for name, kind, options in widget_inputs(cls):
                values.append(spec.get("widgets", {}).get(name, defaults[name]))
                if options.get("control_after_generate"):
                    values.append("fixed")
            names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
            output_rows = [{"name": n, "type": t, "links": [], "slot_index": i}
                           for i, (n, t) in enumerate(zip(names, cls.RETURN_TYPES))]
        node = {"id": spec["id"], "type": spec["type"], "pos": list(spec.get("pos", [0, 0])),
                "size": list(spec.get("size", [320, 160])), "flags": {}, "order": len(out), "mode": 0,
                "inputs": inputs, "outputs": output_rows, "properties": {"Node name for S&R": spec["type"]},
                "widgets_values": values}
        if "title" in spec:
            node["title"] = spec["title"]
        out.append(node)
        by_id[spec["id"]] = node
    for link_id, (src, src_name, dst, dst_name) in enumerate(links, start=1):
        src_node, dst_node = by_id[src], by_id[dst]
        src_slot = next(i for i, o in enumerate(src_node["outputs"]) if o["name"] == src_name)
        dst_slot = next(i for i, o in enumerate(dst_node["inputs"]) if o["name"] == dst_name)
        kind = src_node["outputs"][src_slot]["type"]
        src_node["outputs"][src_slot]["links"].append(link_id)
        dst_node["inputs"][dst_slot]["link"] = link_id
        link_rows.append([link_id, src, src_slot, dst, dst_slot, kind])
    return {"last_node_id": max(by_id), "last_link_id": len(link_rows), "nodes": out, "links": link_rows,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
