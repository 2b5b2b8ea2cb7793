"""The ComfyUI node contract for every node of the pack, and the FuseDream nodes run as ComfyUI runs them."""
import glob
import os

import pytest
import torch

import fusedream_pack
from fusedream_pack.nodes import FAILED_FAMILIES, NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from testkit import ROOT
from testkit.workflows import load, run_node, workflow_problems


def test_every_node_family_imports():
    assert FAILED_FAMILIES == {}


def test_the_pack_exports_its_nodes_and_web_directory():
    assert fusedream_pack.NODE_CLASS_MAPPINGS is NODE_CLASS_MAPPINGS
    assert os.path.isdir(os.path.join(ROOT, fusedream_pack.WEB_DIRECTORY))


@pytest.mark.parametrize("node_id", sorted(NODE_CLASS_MAPPINGS))
def test_every_node_declares_the_v1_contract_with_a_tooltip_on_every_input(node_id, tiny_models):
    cls = NODE_CLASS_MAPPINGS[node_id]
    assert node_id.startswith("FuseDream") and node_id in NODE_DISPLAY_NAME_MAPPINGS
    assert cls.CATEGORY.startswith("FuseDream/") and cls.DESCRIPTION and callable(getattr(cls, cls.FUNCTION))
    names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
    assert len(names) == len(cls.RETURN_TYPES)
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, value in spec.get(section, {}).items():
            assert len(value) > 1 and value[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_example_workflows_are_valid_for_the_nodes(tiny_models):
    # The toy-world templates name the toy-world fixtures' folders: tests/toyworld/test_claims_ovi.py checks them.
    paths = sorted(p for p in glob.glob(os.path.join(ROOT, "example_workflows", "*.json"))
                   if not os.path.basename(p).startswith("Toy world"))
    assert any("single image" in p for p in paths)
    for path in paths:
        assert workflow_problems(load(path), NODE_CLASS_MAPPINGS) == [], os.path.basename(path)


def _call(node_id, **inputs):
    return run_node(node_id, **inputs)["result"]


def test_the_single_image_graph_runs_under_inference_mode_like_comfyui(tiny_models):
    """ComfyUI executes every node inside torch.inference_mode(); loading and optimizing must still work."""
    (generator,) = _call("FuseDreamBigGANLoader", checkpoint="biggan-deep-256")
    (clip,) = _call("FuseDreamCLIPLoader", architecture="auto", checkpoint="ViT-B-32.safetensors")
    (candidates,) = _call("FuseDreamLatentSampler", generator=generator, candidates=12,
                          classes="golden retriever, tabby")
    (objective,) = _call("FuseDreamAugCLIPObjective", clip=clip, copies=4)
    basis, scores = _call("FuseDreamTopK", generator=generator, candidates=candidates, objective=objective, k=3)
    latent, image, score, frames = _call("FuseDreamBasisOptimizer", generator=generator, basis=basis,
                                         objective=objective, steps=6, keep_frames_every=2)
    (decoded,) = _call("FuseDreamDecode", generator=generator, latent=latent)
    mean, text = _call("FuseDreamAugCLIPScore", image=image, objective=objective, draws=2, seed=0)
    assert image.shape == (1, 32, 32, 3) and torch.allclose(decoded, image, atol=1e-5)
    assert frames.shape[0] == 3 and len(scores.split(",")) == 3 and isinstance(mean, float)
