"""The two "Toy world" templates, uncapped, in a real ComfyUI on the toy-world fixtures, read by the judges.

The other end-to-end tests run the method templates on random tiny models with capped work sizes; these run the
toy-world templates exactly as saved, on the trained models a user gets by adding the fixtures as a models root, and
ask the toy world's judges whether the saved images show the caption. Skipped unless ``COMFYUI_PATH`` and
``COMFYUI_PYTHON`` are set (docs/monitor.md).
"""
import io
import json
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

from comfy_server import PACK_DIR, ComfyServer, toyworld_model_roots, ui_to_api
from testkit.hang_guard import HANG_S

pytestmark = pytest.mark.comfyui

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON")
FIXTURES = os.path.join(PACK_DIR, "tests", "fixtures", "toyworld")

if not (COMFYUI_PATH and COMFYUI_PYTHON):
    pytest.skip("set COMFYUI_PATH and COMFYUI_PYTHON to run the real-ComfyUI tests", allow_module_level=True)


@pytest.fixture(scope="module")
def server():
    base = tempfile.mkdtemp(prefix="fusedream-toyworld-e2e-")
    try:
        with ComfyServer(COMFYUI_PATH, COMFYUI_PYTHON, base=base, extra_config=toyworld_model_roots()) as srv:
            yield srv
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_template(server, name: str):
    with open(os.path.join(PACK_DIR, "example_workflows", f"{name}.json")) as f:
        prompt = ui_to_api(json.load(f), server.object_info())
    result = server.run(prompt, timeout=HANG_S)
    assert result.status == "success", json.dumps(result.of_type("execution_error"), indent=1)[:4000]
    return prompt, result


def images_of(server, result, node_id: str) -> torch.Tensor:
    """The images a SaveImage / PreviewImage node wrote, as ``[B,3,H,W]`` in 0..1."""
    pictures = []
    for item in result.outputs[node_id]["images"]:
        data = server.view(item["filename"], item["subfolder"], item["type"])
        pictures.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255)
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2)


def node_reading(prompt: dict, class_type: str, source_type: str, slot: int) -> str:
    """The id of the ``class_type`` node whose images come from output ``slot`` of the ``source_type`` node."""
    return next(i for i, n in prompt.items() if n["class_type"] == class_type
                and prompt[n["inputs"]["images"][0]]["class_type"] == source_type and n["inputs"]["images"][1] == slot)


def test_the_toy_world_composition_template_shows_both_objects_in_comfyui(server):
    """As through the node classes (tests/toyworld/test_claims_composition.py): the fused preview and the saved
    blended image each show at least one of the caption's objects (whether one run places both depends on the CPU's
    kernels: docs/toyworld_composition.md, "Template")."""
    from fusedream_pack.fusedream_ops.toyworld import claims_composition as cc
    from fusedream_pack.fusedream_ops.toyworld.composition_world import load_composition_world

    prompt, result = run_template(server, "Toy world – composition")
    judge = load_composition_world().judge
    labels = torch.zeros(9, dtype=torch.long)
    labels[3], labels[5] = 1, 7  # red circle on the left, blue square on the right (world.py's classes)
    grid = "FuseDreamCompositionGridSearch"
    blended = images_of(server, result, node_reading(prompt, "SaveImage", grid, 0))
    fused = images_of(server, result, node_reading(prompt, "PreviewImage", grid, 1))
    assert blended.shape == fused.shape == (1, 3, 32, 32)
    assert cc.read_objects(judge, fused, labels)["found"].item() >= 0.5
    assert cc.read_objects(judge, blended, labels)["found"].item() >= 0.5


def test_the_toy_world_ovi_template_decodes_the_caption_in_comfyui(server):
    """"a red circle on the left": at least half of the OVI images decoded by the toy Kandinsky decoder show a red
    object on the left (the node-class test's threshold, tests/toyworld/test_claims_ovi.py)."""
    from fusedream_pack.fusedream_ops.toyworld import claims_ovi as co
    from fusedream_pack.fusedream_ops.toyworld.build import load_judge

    prompt, result = run_template(server, "Toy world – OVI")
    judge = load_judge(os.path.join(FIXTURES, "toyworld", "judge.safetensors"))
    labels = torch.zeros(9, dtype=torch.long)
    labels[3] = 1
    (ovi_decoder,) = [i for i, n in prompt.items() if n["class_type"] == "FuseDreamKandinsky22Decoder"
                      and prompt[n["inputs"]["image_embeds"][0]]["class_type"] == "FuseDreamOVIPrior"]
    (preview,) = [i for i, n in prompt.items() if n["class_type"] == "PreviewImage"
                  and n["inputs"]["images"][0] == ovi_decoder]
    images = images_of(server, result, preview)
    assert images.shape == (4, 3, 64, 64)
    assert co.colour_and_cell_rate(judge, images, labels) >= 0.5
