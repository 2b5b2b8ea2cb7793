"""A saved UI workflow checked against ComfyUI's ``/object_info``: every node known, every widget value valid, every
link joining an output and an input of the same type, every required input connected.

Standard library only. The same check runs against a live server (tests/e2e/test_comfyui_server.py) and, in CI where
no ComfyUI exists, against ``object_info_stock.json``: a trimmed snapshot of ComfyUI 0.3.64's ``/object_info`` for
the stock nodes the templates use, next to the pack's own nodes described from their classes
(:func:`pack_object_info`). Regenerate the snapshot (and the live test compares it with the running server)::

    python tests/e2e/workflow_check.py --comfyui /work/comfyui --python /work/comfyui-venv/bin/python
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys

from comfy_server import FRONTEND_ONLY, WIDGET_TYPES, _widget_inputs as widget_inputs

HERE = os.path.dirname(os.path.abspath(__file__))
SNAPSHOT = os.path.join(HERE, "object_info_stock.json")
TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "example_workflows")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
FILE_LISTS = {("CheckpointLoaderSimple", "ckpt_name"), ("UpscaleModelLoader", "model_name"), ("LoadImage", "image"),
              ("CLIPVisionLoader", "clip_name"), ("VAELoader", "vae_name")}
"""Combos listing the user's files: their options depend on what is installed, so the snapshot keeps none and a
value is valid when the list is empty (the weights are absent) or holds it."""
KEPT = ("input", "input_order", "output", "output_name", "output_is_list")
"""The fields of an /object_info entry the check reads (and the snapshot keeps)."""


def _spec(info: dict, name: str):
    inputs = info.get("input", {})
    return inputs.get("required", {}).get(name) or inputs.get("optional", {}).get(name)


def _kind_and_options(spec) -> tuple[object, dict]:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if kind == "COMBO":
        kind = list(options.get("options", []))
    return kind, options


def _is_widget(kind, options) -> bool:
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def _value_problem(node_type: str, name: str, kind, options: dict, value) -> str | None:
    if isinstance(kind, list):
        if value in kind or ((node_type, name) in FILE_LISTS and not kind and isinstance(value, str) and value):
            return None
        return f"'{name}' = {value!r} is not one of its options"
    if kind in ("INT", "FLOAT"):
        numeric = isinstance(value, int) if kind == "INT" else isinstance(value, (int, float))
        if not numeric or isinstance(value, bool):
            return f"'{name}' = {value!r} is not {'an int' if kind == 'INT' else 'a number'}"
        if not options.get("min", value) <= value <= options.get("max", value):
            return f"'{name}' = {value} is outside [{options.get('min')}, {options.get('max')}]"
    if kind == "STRING" and not isinstance(value, str):
        return f"'{name}' = {value!r} is not a string"
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return f"'{name}' = {value!r} is not a boolean"
    return None


def node_problems(node: dict, info: dict) -> list[str]:
    """The widget values, inputs and outputs of one saved node against its /object_info entry."""
    problems = []
    values = node.get("widgets_values") or []
    pos = 0
    for name, count in widget_inputs(info):
        if pos >= len(values):
            problems.append(f"missing value for '{name}'")
            break
        kind, options = _kind_and_options(_spec(info, name))
        problem = _value_problem(node["type"], name, kind, options, values[pos])
        if problem:
            problems.append(problem)
        control = values[pos + 1] if pos + 1 < len(values) else None
        if count == 2 and not options.get("image_upload") and control not in CONTROL_VALUES:
            problems.append(f"'{name}' should be followed by a control value {CONTROL_VALUES}")
        pos += count
    if pos < len(values):
        problems.append(f"{len(values) - pos} extra widget values")
    linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
    for name in info.get("input", {}).get("required", {}):
        kind, options = _kind_and_options(_spec(info, name))
        if not _is_widget(kind, options) and name not in linked:
            problems.append(f"required input '{name}' is not connected")
    for slot in node.get("inputs", []):
        spec = _spec(info, slot["name"])
        if spec is None:
            problems.append(f"input '{slot['name']}' does not exist")
        elif not isinstance(_kind_and_options(spec)[0], list) and slot["type"] != spec[0]:
            problems.append(f"input '{slot['name']}' is saved as {slot['type']} but is {spec[0]}")
    outputs = [o["type"] for o in node.get("outputs", [])]
    if outputs != list(info.get("output", [])):
        problems.append(f"outputs {outputs} differ from {info.get('output')}")
    return problems


def object_info_problems(workflow: dict, object_info: dict) -> list[str]:
    """Everything in ``workflow`` that ComfyUI (described by ``object_info``) would refuse or mis-connect."""
    problems = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for node in workflow["nodes"]:
        where = f"node {node['id']} ({node['type']})"
        info = object_info.get(node["type"])
        if info is None:
            if node["type"] not in FRONTEND_ONLY:
                problems.append(f"{where}: unknown node type")
            continue
        problems += [f"{where}: {p}" for p in node_problems(node, info)]
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        if src not in nodes or dst not in nodes:
            problems.append(f"link {link_id} joins a missing node")
            continue
        src_node, dst_node = nodes[src], nodes[dst]
        src_out, dst_in = src_node["outputs"][src_slot], dst_node["inputs"][dst_slot]
        if link_id not in (src_out.get("links") or []) or dst_in.get("link") != link_id:
            problems.append(f"link {link_id} is not recorded on both ends")
        src_info, dst_info = object_info.get(src_node["type"]), object_info.get(dst_node["type"])
        declared_out = src_info["output"][src_slot] if src_info and src_slot < len(src_info["output"]) else None
        spec = _spec(dst_info, dst_in["name"]) if dst_info else None
        declared_in = spec[0] if spec else None
        if not (declared_out == declared_in == kind):
            problems.append(f"link {link_id} ({src_node['type']} slot {src_slot} -> {dst_node['type']}."
                            f"{dst_in['name']}) carries {kind}: the output is {declared_out}, the input {declared_in}")
    return problems


def without_absent_files(prompt: dict, object_info: dict) -> tuple[dict, list[str]]:
    """An API prompt without the nodes that name a file the server does not list (weights not installed) and the
    nodes downstream of them, so the rest of a template can run; and the removed nodes' ids."""
    dropped = set()
    for nid, node in prompt.items():
        for name, value in node["inputs"].items():
            if (node["class_type"], name) in FILE_LISTS:
                kind, _ = _kind_and_options(_spec(object_info[node["class_type"]], name))
                if value not in kind:
                    dropped.add(nid)
    grew = True
    while grew:
        grew = False
        for nid, node in prompt.items():
            linked = (str(v[0]) for v in node["inputs"].values() if isinstance(v, list))
            if nid not in dropped and any(origin in dropped for origin in linked):
                dropped.add(nid)
                grew = True
    return {k: v for k, v in prompt.items() if k not in dropped}, sorted(dropped)


def trimmed(object_info: dict, node_types) -> dict:
    """The entries of ``node_types`` with only the fields the check reads, file lists emptied."""
    out = {}
    for node_type in sorted(node_types):
        entry = json.loads(json.dumps({k: object_info[node_type][k] for k in KEPT if k in object_info[node_type]}))
        for section in entry.get("input", {}).values():
            for name, spec in section.items():
                if (node_type, name) in FILE_LISTS and isinstance(spec, list):
                    if spec[0] == "COMBO":
                        spec[1]["options"] = []
                    else:
                        spec[0] = []
        out[node_type] = entry
    return out


def template_node_types(pack_types) -> set[str]:
    """The stock node types the pack's templates use."""
    types = set()
    for path in glob.glob(os.path.join(TEMPLATES, "*.json")):
        with open(path, encoding="utf-8") as f:
            types |= {n["type"] for n in json.load(f)["nodes"]}
    return types - set(pack_types) - FRONTEND_ONLY


def load_snapshot() -> dict:
    with open(SNAPSHOT, encoding="utf-8") as f:
        return json.load(f)


def pack_object_info(mappings: dict) -> dict:
    """``/object_info`` entries for the pack's node classes, built as ComfyUI's server builds them."""
    out = {}
    for node_type, cls in mappings.items():
        spec = cls.INPUT_TYPES()
        out[node_type] = json.loads(json.dumps({
            "input": spec, "input_order": {k: list(v) for k, v in spec.items()},
            "output": list(cls.RETURN_TYPES),
            "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
            "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)))}))
    return out


def main(argv=None) -> int:
    from comfy_server import ComfyServer

    parser = argparse.ArgumentParser(description="Write object_info_stock.json from a real ComfyUI.")
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), required="COMFYUI_PATH" not in os.environ)
    parser.add_argument("--python", default=os.environ.get("COMFYUI_PYTHON", sys.executable))
    args = parser.parse_args(argv)
    server = ComfyServer(args.comfyui, args.python)
    try:
        with server:
            info = server.object_info()
        pack = {t for t, i in info.items() if i.get("python_module", "").startswith("custom_nodes.")}
        with open(SNAPSHOT, "w", encoding="utf-8") as f:
            json.dump(trimmed(info, template_node_types(pack)), f, indent=1, sort_keys=True)
            f.write("\n")
    finally:
        shutil.rmtree(server.base, ignore_errors=True)
    print(SNAPSHOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
