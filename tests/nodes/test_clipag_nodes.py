"""The CLIPAG nodes run as ComfyUI runs them (inside inference mode) on the fixture command's CLIPAG stand-in."""
import os

import pytest
import torch
from PIL import Image

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.nodes import NODE_CLASS_MAPPINGS
from testkit import ROOT
from testkit.workflows import load, run_node, workflow_problems

WORKFLOW = os.path.join(ROOT, "example_workflows", "CLIPAG – generator-free.json")
SMALL = dict(size=32, steps=3, views=2, patches=2, preview_every=1)


call = run_node


@pytest.fixture(scope="module")
def clipag(tiny_models):
    return call("FuseDreamCLIPLoader", architecture="auto", checkpoint="CLIPAG_ViTB32.pt")["result"][0]


def test_generator_free_synthesis_returns_images_frames_and_the_series(clipag):
    out = call("FuseDreamCLIPAGSynthesis", clip=clipag, prompt="a red circle", batch_size=2, keep_frames_every=1,
               **SMALL)
    image, init, score, frames = out["result"]
    assert image.shape == init.shape == (2, 32, 32, 3) and 0 <= image.min() and image.max() <= 1
    assert not torch.equal(image, init) and isinstance(score, float)
    assert frames.shape == (3, 32, 32, 3)
    run = out["ui"]["fusedream_series"][0]
    assert run["steps"] == [1, 2, 3] and set(run["series"]) == {"clip", "patch_clip"}


def test_the_same_seed_reproduces_the_image(clipag):
    first = call("FuseDreamCLIPAGSynthesis", clip=clipag, prompt="a red circle", seed=3, **SMALL)["result"][0]
    again = call("FuseDreamCLIPAGSynthesis", clip=clipag, prompt="a red circle", seed=3, **SMALL)["result"][0]
    other = call("FuseDreamCLIPAGSynthesis", clip=clipag, prompt="a red circle", seed=4, **SMALL)["result"][0]
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_colour_and_image_inits(clipag):
    init = call("FuseDreamCLIPAGSynthesis", clip=clipag, prompt="x", init="color", color="#ff0000",
                **SMALL)["result"][1]
    assert torch.allclose(init[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    with torch.inference_mode():
        pool = torch.rand(3, 40, 48, 3)
    init = call("FuseDreamCLIPAGSynthesis", clip=clipag, prompt="x", init="image", init_image=pool, batch_size=2,
                **SMALL)["result"][1]
    assert init.shape == (2, 32, 32, 3)
    with pytest.raises(FuseDreamError, match="no init_image is connected"):
        call("FuseDreamCLIPAGSynthesis", clip=clipag, prompt="x", init="image", **SMALL)


def test_gaussian_init_from_a_reference_folder(clipag, tmp_path, monkeypatch):
    monkeypatch.setenv("FUSEDREAM_EXTRA_ROOTS", str(tmp_path))
    for cls, rgb in (("reds", (200, 20, 20)), ("blues", (20, 20, 200))):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (24, 24), tuple(min(255, c + 20 * i) for c in rgb)).save(tmp_path / cls / f"{i}.png")
    (gaussian,) = call("FuseDreamReferenceImageGaussian", folder=str(tmp_path))["result"]
    assert gaussian.means.shape == (2, 3 * 16 * 16)
    init = call("FuseDreamCLIPAGSynthesis", clip=clipag, prompt="x", init="gaussian", init_gaussian=gaussian,
                candidates=6, **SMALL)["result"][1]
    assert init.shape == (1, 32, 32, 3)
    with pytest.raises(FuseDreamError, match="no init_gaussian is connected"):
        call("FuseDreamCLIPAGSynthesis", clip=clipag, prompt="x", init="gaussian", **SMALL)


def test_the_example_workflow_loads_clipag_and_is_valid(tiny_models):
    workflow = load(WORKFLOW)
    assert workflow_problems(workflow, NODE_CLASS_MAPPINGS) == []
    loader = next(n for n in workflow["nodes"] if n["type"] == "FuseDreamCLIPLoader")
    assert loader["widgets_values"] == ["auto", "CLIPAG_ViTB32.pt", "auto"]
    assert {n["type"] for n in workflow["nodes"]} >= {"FuseDreamCLIPAGSynthesis", "SaveImage"}
