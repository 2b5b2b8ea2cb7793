"""A scorer whose image tower is a Hugging-Face-layout CLIP ViT (ComfyUI's CLIP_VISION layout) and whose text tower is
open_clip (fusedream_ops/clip_vision_tower.py). The image tower here is transformers' CLIPVisionModelWithProjection,
the class whose layout ComfyUI's CLIPVisionModelProjection copies, loaded with the tiny open_clip's own weights;
tests/e2e/test_clip_vision_in_comfyui.py does the same with ComfyUI's real classes."""
import os

import pytest
import torch

from fusedream_pack.fusedream_ops.fusedream.augment import AugmentPolicy
from fusedream_pack.fusedream_ops.core.autograd import grad_enabled
from fusedream_pack.fusedream_ops.models.clip import load_clip
from fusedream_pack.fusedream_ops.models.clip_vision_tower import (VisionTowerScorer, activation_name, hf_vit_features,
                                                            open_clip_visual_as_hf, ordinary_parameters,
                                                            require_same_clip)
from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fixtures import biggan_clip
from fusedream_pack.fusedream_ops.fusedream.objective import AugClipObjective
from fusedream_pack.fusedream_ops.fusedream.ranking import score_images

TINY = biggan_clip.TINY_CLIP_CONFIG


def hf_tower(state=None, **changes):
    """transformers' CLIP ViT with projection shaped like the tiny open_clip, with ``state`` (HF names) loaded."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    v = TINY["vision_cfg"]
    config = dict(hidden_size=v["width"], intermediate_size=4 * v["width"], num_hidden_layers=v["layers"],
                  num_attention_heads=v["width"] // v["head_width"], patch_size=v["patch_size"],
                  image_size=v["image_size"], projection_dim=TINY["embed_dim"], hidden_act="gelu", layer_norm_eps=1e-5)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**{**config, **changes})).eval().requires_grad_(False)
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return model


@pytest.fixture
def text_scorer(tiny_models):
    """A fresh tiny open_clip scorer (the vision-tower scorer drops its image tower)."""
    return load_clip("auto", os.path.join(tiny_models, "open_clip", biggan_clip.CLIP_NAME))


def _visual_state(scorer):
    return open_clip_visual_as_hf({f"visual.{k}": v for k, v in scorer.model.visual.state_dict().items()})


def _scorer(text_scorer, tower):
    """The scorer as the node builds it: the functional forward over the tower's current weights."""
    mean, std = text_scorer.mean.flatten().tolist(), text_scorer.std.flatten().tolist()
    heads = tower.config.num_attention_heads
    return VisionTowerScorer(text_scorer, lambda px: hf_vit_features(tower.state_dict(), px, heads, "gelu"),
                             lambda: torch.device("cpu"), TINY["vision_cfg"]["image_size"], mean, std, "tiny + HF")


def _images(n=5, size=48):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3))


def test_the_converted_tower_gives_open_clips_own_image_features_and_the_same_ranking(tiny_models, text_scorer):
    """Fails when a weight is mis-mapped (checked by not transposing proj, and by swapping q/k in the split)."""
    reference = load_clip("auto", os.path.join(tiny_models, "open_clip", biggan_clip.CLIP_NAME))
    tower = hf_tower(_visual_state(text_scorer))
    scorer = _scorer(text_scorer, tower)
    images = _images()
    with torch.no_grad():
        assert torch.allclose(scorer.encode_images(images), reference.encode_images(images), atol=1e-5)
    assert not hasattr(scorer.model.visual, "conv1"), "the open_clip image tower is dropped"
    prompts = [("a red circle", 1.0), ("blurry", -0.5)]
    ours = AugClipObjective(scorer, prompts, AugmentPolicy(), copies=3)
    theirs = AugClipObjective(reference, prompts, AugmentPolicy(), copies=3)
    assert torch.allclose(score_images(ours, images, 2, 1), score_images(theirs, images, 2, 1), atol=1e-5)


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_the_functional_forward_equals_transformers_clip_vision_model(act):
    """The same layout ComfyUI's CLIPVisionModelProjection copies (checked: dropping pre_layrnorm fails it)."""
    torch.manual_seed(0)
    tower = hf_tower(hidden_act=act)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = tower(pixel_values=pixels).image_embeds
        assert torch.allclose(hf_vit_features(tower.state_dict(), pixels, 2, act), expected, atol=1e-5)


def test_matching_towers_pass_and_every_mismatch_names_both_models(text_scorer):
    state = dict(hf_tower(_visual_state(text_scorer)).state_dict())
    require_same_clip(state, 2, "gelu", text_scorer, "vision.safetensors", "text.safetensors")
    deeper = dict(hf_tower(num_hidden_layers=3).state_dict())
    with pytest.raises(FuseDreamError, match=r"vision.safetensors.*text.safetensors.*layers 3 vs 2"):
        require_same_clip(deeper, 2, "gelu", text_scorer, "vision.safetensors", "text.safetensors")
    with pytest.raises(FuseDreamError, match="quickgelu"):
        require_same_clip(state, 2, "quick_gelu", text_scorer, "vision.safetensors", "text.safetensors")
    other = dict(hf_tower().state_dict())  # same shapes, another (random) training
    with pytest.raises(FuseDreamError, match="different trainings"):
        require_same_clip(other, 2, "gelu", text_scorer, "vision.safetensors", "text.safetensors")
    siglip_like = {k: v for k, v in state.items() if "class_embedding" not in k}
    with pytest.raises(FuseDreamError, match="not an open_clip-compatible CLIP ViT"):
        require_same_clip(siglip_like, 2, "gelu", text_scorer, "vision.safetensors", "text.safetensors")


def test_activation_names_tell_quick_gelu_from_gelu():
    assert activation_name(torch.nn.GELU()) == "gelu"
    assert activation_name(lambda a: a * torch.sigmoid(1.702 * a)) == "quick_gelu"
    assert activation_name(torch.relu) == "other"


def test_a_tower_built_in_inference_mode_passes_gradients_once_its_parameters_are_ordinary(text_scorer):
    """ComfyUI builds CLIP_VISION inside inference mode; without ordinary_parameters backward fails (checked)."""
    state = _visual_state(text_scorer)
    with torch.inference_mode():
        tower = hf_tower(state)
    scorer = _scorer(text_scorer, tower)
    images = _images(2).requires_grad_()
    with grad_enabled(), pytest.raises(RuntimeError, match="[Ii]nference tensors"):
        scorer.encode_images(images).sum().backward()
    ordinary_parameters(tower)
    with grad_enabled():
        scorer.encode_images(images).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
