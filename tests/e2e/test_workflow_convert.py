"""The UI -> API workflow converter of the end-to-end harness (runs without ComfyUI)."""
import json
import os

import pytest

from comfy_server import _widget_inputs, ui_to_api

HERE = os.path.dirname(os.path.abspath(__file__))

# What ComfyUI 0.3.64's /object_info says about the nodes used below (trimmed to the fields the converter reads).
OBJECT_INFO = {
    "FuseDreamProbe_Monitor": {
        "input": {"required": {
            "steps": ["INT", {"default": 30}], "size": ["INT", {"default": 64}],
            "seed": ["INT", {"default": 0, "control_after_generate": True}],
            "step_delay": ["FLOAT", {"default": 0.02}],
            "preview_every": ["INT", {"default": 5, "advanced": True}],
            "keep_frames_every": ["INT", {"default": 0}]},
            "hidden": {"unique_id": "UNIQUE_ID"}},
        "input_order": {"required": ["steps", "size", "seed", "step_delay", "preview_every", "keep_frames_every"],
                        "hidden": ["unique_id"]},
        "display_name": "FuseDream Probe (monitor test)",
    },
    "PreviewImage": {"input": {"required": {"images": ["IMAGE"]}, "hidden": {}},
                     "input_order": {"required": ["images"]}, "display_name": "Preview Image"},
    "SaveAnimatedWEBP": {
        "input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}],
                               "fps": ["FLOAT", {"default": 6.0}], "lossless": ["BOOLEAN", {"default": True}],
                               "quality": ["INT", {"default": 80}], "method": [["default", "fastest", "slowest"]]}},
        "input_order": {"required": ["images", "filename_prefix", "fps", "lossless", "quality", "method"]},
        "display_name": "SaveAnimatedWEBP",
    },
    "KSamplerLike": {
        "input": {"required": {"model": ["MODEL"], "seed": ["INT", {"default": 0}],
                               "steps": ["INT", {"default": 20}], "denoise": ["FLOAT", {"default": 1.0, "forceInput": True}]},
                  "optional": {"note": ["STRING", {"multiline": True}]}},
        "input_order": {"required": ["model", "seed", "steps", "denoise"], "optional": ["note"]},
    },
}


def load_probe_workflow():
    with open(os.path.join(HERE, "probe_workflow.json")) as f:
        return json.load(f)


def test_widget_values_map_to_names_skipping_the_seed_control_value():
    prompt = ui_to_api(load_probe_workflow(), OBJECT_INFO)
    assert prompt["1"]["class_type"] == "FuseDreamProbe_Monitor"
    assert prompt["1"]["inputs"] == {"steps": 60, "size": 64, "seed": 7, "step_delay": 0.05, "preview_every": 5,
                                     "keep_frames_every": 10}
    assert prompt["3"]["inputs"] == {"images": ["1", 1], "filename_prefix": "fusedream_probe", "fps": 6.0,
                                     "lossless": False, "quality": 80, "method": "default"}
    assert prompt["2"]["inputs"] == {"images": ["1", 0]}
    assert prompt["1"]["_meta"]["title"] == "FuseDream Probe (monitor test)"


def test_seed_named_int_gets_a_control_value_unless_disabled_and_force_input_is_a_socket():
    assert _widget_inputs(OBJECT_INFO["KSamplerLike"]) == [("seed", 2), ("steps", 1), ("note", 1)]
    info = json.loads(json.dumps(OBJECT_INFO["KSamplerLike"]))
    info["input"]["required"]["seed"][1]["control_after_generate"] = False
    assert _widget_inputs(info)[0] == ("seed", 1)


def test_links_through_reroutes_muted_nodes_and_notes():
    wf = load_probe_workflow()
    wf["nodes"].append({"id": 4, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 3}],
                        "outputs": [{"name": "", "type": "IMAGE", "links": [4]}]})
    wf["nodes"].append({"id": 5, "type": "PreviewImage", "mode": 0,
                        "inputs": [{"name": "images", "type": "IMAGE", "link": 4}], "widgets_values": []})
    wf["nodes"].append({"id": 6, "type": "Note", "mode": 0, "widgets_values": ["hello"]})
    wf["links"] += [[3, 1, 1, 4, 0, "IMAGE"], [4, 4, 0, 5, 0, "IMAGE"]]
    wf["nodes"][1]["mode"] = 2  # muted
    prompt = ui_to_api(wf, OBJECT_INFO)
    assert set(prompt) == {"1", "3", "5"}
    assert prompt["5"]["inputs"]["images"] == ["1", 1]


def test_unknown_node_type_is_an_error():
    wf = load_probe_workflow()
    wf["nodes"][1]["type"] = "NoSuchNode"
    with pytest.raises(KeyError):
        ui_to_api(wf, OBJECT_INFO)
