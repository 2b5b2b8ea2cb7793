"""Run with ComfyUI's Python: ComfyUI's real CLIP vision classes as the image tower of the pack's CLIP Vision scorer.

    python tests/e2e/clip_vision_check.py COMFYUI_PATH WORK_DIR    # prints one JSON object

A tiny open_clip CLIP is saved to WORK_DIR/open_clip; ComfyUI's ``ClipVisionModel`` is built (inside inference mode,
as Load CLIP Vision runs) from a tiny config of the same shape and loaded with that CLIP's image tower renamed to
ComfyUI's layout, exactly what ComfyUI's loader reads from a real file. The pack's node then pairs it with the open_clip
file; the script reports how its features, AugCLIP ranking and gradients compare with open_clip's own scorer, and the
errors for a deeper tower and a QuickGELU tower.
"""
import importlib.util
import json
import os
import sys

import torch

PACK = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "gelu", "hidden_size": 64, "image_size": 32,
          "intermediate_size": 256, "layer_norm_eps": 1e-5, "model_type": "clip_vision_model",
          "num_attention_heads": 2, "num_channels": 3, "num_hidden_layers": 2, "patch_size": 8, "projection_dim": 32}


def _import_pack():
    spec = importlib.util.spec_from_file_location("fusedream_pack", os.path.join(PACK, "__init__.py"),
                                                  submodule_search_locations=[PACK])
    module = importlib.util.module_from_spec(spec)
    sys.modules["fusedream_pack"] = module
    spec.loader.exec_module(module)
    return module


def _clip_vision(work, state, **changes):
    import comfy.clip_vision

    path = os.path.join(work, f"clip_vision_{len(os.listdir(work))}.json")
    with open(path, "w") as f:
        json.dump({**CONFIG, **changes}, f)
    with torch.inference_mode():
        model = comfy.clip_vision.ClipVisionModel(path)
        missing, unexpected = model.load_sd(state)
    return model, sorted(missing), sorted(unexpected)


def _error(fn) -> str:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 (reported, the test asserts on it)
        return f"{type(exc).__name__}: {exc}"
    return ""


def main(comfyui: str, work: str) -> dict:
    sys.path.insert(0, comfyui)
    import comfy.cli_args

    comfy.cli_args.args.cpu = not torch.cuda.is_available()  # as main.py --cpu: no GPU here
    import folder_paths

    pack = _import_pack()
    from fusedream_pack.fusedream_ops.core.autograd import grad_enabled
    from fusedream_pack.fusedream_ops.models.clip import load_clip, save_clip
    from fusedream_pack.fusedream_ops.models.clip_vision_tower import open_clip_visual_as_hf
    from fusedream_pack.fusedream_ops.fixtures.biggan_clip import TINY_CLIP_CONFIG, tiny_clip

    torch.manual_seed(0)
    folder = os.path.join(work, "open_clip")
    os.makedirs(folder, exist_ok=True)
    clip_path = save_clip(tiny_clip(), os.path.join(folder, "tiny.safetensors"), TINY_CLIP_CONFIG)
    folder_paths.add_model_folder_path("open_clip", folder)
    reference = load_clip("auto", clip_path, "fp32")
    state = open_clip_visual_as_hf({f"visual.{k}": v for k, v in reference.model.visual.state_dict().items()})
    clip_vision, missing, unexpected = _clip_vision(work, dict(state))
    nodes = pack.NODE_CLASS_MAPPINGS
    with torch.inference_mode():
        (scorer,) = nodes["FuseDreamCLIPVisionScorer"]().build(clip_vision=clip_vision, architecture="auto",
                                                               checkpoint="tiny.safetensors", precision="fp32")
    images = torch.rand(6, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = scorer.encode_images(images), reference.encode_images(images)
    scores = {}
    for name, clip in (("comfy", scorer), ("open_clip", reference)):
        with torch.inference_mode():
            (objective,) = nodes["FuseDreamAugCLIPObjective"]().build(clip=clip, prompt="a red circle\nblurry:-0.5",
                                                                      copies=4, color=True, translation=True,
                                                                      resize=True, cutout=True)
            out = nodes["FuseDreamRankImages"]().rank(image=images.movedim(1, -1).contiguous(), objective=objective,
                                                      top_n=2, draws=2, seed=3, augment=True, chunk=0)
        scores[name] = out["result"][2:4]
    with grad_enabled():
        x = images.clone().requires_grad_()
        objective.scorer = scorer  # the last objective, scoring through ComfyUI's tower
        objective.score(x, torch.Generator().manual_seed(0)).sum().backward()
    deeper, _, _ = _clip_vision(work, dict(state), num_hidden_layers=3)
    quick, _, _ = _clip_vision(work, dict(state), hidden_act="quick_gelu")

    def build(cv):
        with torch.inference_mode():
            nodes["FuseDreamCLIPVisionScorer"]().build(clip_vision=cv, architecture="auto",
                                                       checkpoint="tiny.safetensors", precision="fp32")

    return {"missing": missing, "unexpected": unexpected,
            "tower_dtype": str(next(clip_vision.model.parameters()).dtype),
            "feature_difference": float((ours - theirs).abs().max()),
            "ranked_comfy": scores["comfy"], "ranked_open_clip": scores["open_clip"],
            "gradient_norm": float(x.grad.norm()), "gradient_finite": bool(torch.isfinite(x.grad).all()),
            "deeper_error": _error(lambda: build(deeper)), "quick_gelu_error": _error(lambda: build(quick))}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
