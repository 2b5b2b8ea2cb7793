"""Every template against ComfyUI's /object_info without a ComfyUI: stock nodes from the committed snapshot of
ComfyUI 0.3.64 (object_info_stock.json), the pack's nodes from their classes. The live server is compared with the
snapshot and checks the same templates in test_comfyui_server.py."""
import copy
import glob
import json
import os

import pytest

from workflow_check import (SNAPSHOT, TEMPLATES, load_snapshot, object_info_problems, pack_object_info,
                            template_node_types)

# The toy-world templates name the toy-world models, which the tiny fixture tree lacks: their own tests check them.
PATHS = sorted(p for p in glob.glob(os.path.join(TEMPLATES, "*.json"))
               if not os.path.basename(p).startswith("Toy world"))
MIX = [p for p in PATHS if os.path.basename(p).startswith("Mix – ")]


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def object_info(tiny_models):
    from fusedream_pack.nodes import NODE_CLASS_MAPPINGS

    return {**load_snapshot(), **pack_object_info(NODE_CLASS_MAPPINGS)}


def test_the_snapshot_describes_every_stock_node_a_template_uses():
    from fusedream_pack.nodes import NODE_CLASS_MAPPINGS

    missing = template_node_types(NODE_CLASS_MAPPINGS) - set(load_snapshot())
    assert not missing, f"regenerate {os.path.basename(SNAPSHOT)} (see workflow_check.py): {sorted(missing)}"


@pytest.mark.parametrize("path", PATHS, ids=[os.path.basename(p) for p in PATHS])
def test_every_template_is_valid_against_object_info(object_info, path):
    assert object_info_problems(_load(path), object_info) == []


def test_the_mixing_templates_describe_the_weights_they_need():
    assert len(MIX) == 4
    for path in MIX:
        text = _load(path)["extra"]["fusedream"]["description"]
        assert "Needs" in text and "models/" in text and os.path.isfile(path[:-len(".json")] + ".jpg"), path


def _link(workflow, src_type, dst_input):
    nodes = {n["id"]: n for n in workflow["nodes"]}
    return next(row for row in workflow["links"]
                if nodes[row[1]]["type"] == src_type and nodes[row[3]]["inputs"][row[4]]["name"] == dst_input)


def test_the_check_finds_wrong_link_types_out_of_range_widgets_and_loose_inputs(object_info):
    """Each breakage of the img2img template is named (checked: the unbroken template passes above)."""
    good = _load(os.path.join(TEMPLATES, "Mix – CLIPAG init for SD 1.5 img2img.json"))
    nodes = lambda wf: {n["type"]: n for n in wf["nodes"]}  # noqa: E731

    wrong_type = copy.deepcopy(good)
    row = _link(wrong_type, "VAEEncode", "latent_image")
    nodes(wrong_type)["KSampler"]["inputs"][row[4]]["name"] = "positive"
    assert any("carries LATENT" in p for p in object_info_problems(wrong_type, object_info))

    denoise = copy.deepcopy(good)
    nodes(denoise)["KSampler"]["widgets_values"][-1] = 1.5
    assert any("'denoise' = 1.5 is outside" in p for p in object_info_problems(denoise, object_info))

    sampler = copy.deepcopy(good)
    nodes(sampler)["KSampler"]["widgets_values"][4] = "no_such_sampler"
    assert any("'sampler_name'" in p for p in object_info_problems(sampler, object_info))

    loose = copy.deepcopy(good)
    row = _link(loose, "CheckpointLoaderSimple", "vae")
    loose["links"].remove(row)
    for node in loose["nodes"]:
        for slot in node["inputs"]:
            if slot["link"] == row[0]:
                slot["link"] = None
    problems = object_info_problems(loose, object_info)
    assert any("required input 'vae' is not connected" in p for p in problems)
