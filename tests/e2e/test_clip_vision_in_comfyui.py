"""ComfyUI's real CLIP vision classes as the image tower of the CLIP Vision scorer (clip_vision_check.py runs in
ComfyUI's Python). Skipped unless COMFYUI_PATH and COMFYUI_PYTHON are set."""
import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.comfyui

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON")
HERE = os.path.dirname(os.path.abspath(__file__))

if not (COMFYUI_PATH and COMFYUI_PYTHON):
    pytest.skip("set COMFYUI_PATH and COMFYUI_PYTHON to run the real-ComfyUI tests", allow_module_level=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("clip_vision"))
    out = subprocess.run([COMFYUI_PYTHON, os.path.join(HERE, "clip_vision_check.py"), COMFYUI_PATH, work],
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_comfyuis_loader_takes_the_renamed_open_clip_tower_exactly(report):
    assert report["missing"] == [] and report["unexpected"] == []


def test_comfyuis_tower_scores_and_ranks_like_open_clip_and_passes_gradients(report):
    """ComfyUI keeps CLIP vision weights in fp16 on a CPU; features agree to fp16 rounding (checked: the run through
    ComfyUI's own module instead of hf_vit_features fails backward, its residual adds being in place)."""
    assert report["feature_difference"] < 2e-3
    (ours, order), (theirs, their_order) = report["ranked_comfy"], report["ranked_open_clip"]
    assert order == their_order and max(abs(a - b) for a, b in zip(ours, theirs)) < 1e-3
    assert report["gradient_finite"] and report["gradient_norm"] > 0


def test_a_different_tower_is_refused_naming_both_models(report):
    for key, detail in (("deeper_error", "layers 3 vs 2"), ("quick_gelu_error", "-quickgelu")):
        assert report[key].startswith("FuseDreamError: [FuseDream]") and "clip_vision" in report[key]
        assert "tiny.safetensors" in report[key] and detail in report[key]
