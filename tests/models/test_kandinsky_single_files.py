"""The prior's CLIP towers from single Hugging Face-layout files (as ComfyUI's clip_vision / text_encoders hold them)."""
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fixtures import kandinsky as fixtures
from fusedream_pack.fusedream_ops.models.kandinsky import _infer_config, load_encoders_from_files, load_trained_prior
from testkit import kandinsky_models as km


def save_tower(model, path, sidecar=True):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    if sidecar:
        with open(os.path.splitext(path)[0] + ".json", "w") as f:
            json.dump(model.config.to_dict(), f)
    return path


@pytest.fixture(scope="module")
def tower_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("single")
    return (save_tower(fixtures.tiny_image_encoder(), str(folder / "clip_vision_tiny.safetensors")),
            save_tower(fixtures.tiny_text_encoder(), str(folder / "clip_tiny.safetensors")))


def test_single_files_give_the_same_embeddings_as_the_prior_folder(tower_files):
    encoders = load_encoders_from_files(*tower_files)
    reference = km.encoders()
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(encoders.encode_images(images), reference.encode_images(images), atol=1e-5)
    text = encoders.encode_text(["blue old car on a beach"]).text_embeds
    assert torch.allclose(text, reference.encode_text(["blue old car on a beach"]).text_embeds, atol=1e-5)
    assert encoders.folder == "" and encoders.embed_dim == fixtures.EMBED_DIM


def test_the_trained_prior_asks_for_the_prior_folder(tower_files):
    encoders = load_encoders_from_files(*tower_files)
    with pytest.raises(FuseDreamError, match="loaded from single files; the trained prior needs a prior folder"):
        load_trained_prior(encoders.folder)


def test_architecture_is_read_from_the_shapes_of_a_standard_width_tower(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=768, num_attention_heads=12, intermediate_size=96, num_hidden_layers=1, patch_size=16,
        image_size=32, projection_dim=16)).eval()
    path = save_tower(model, str(tmp_path / "vit_b_like.safetensors"), sidecar=False)
    text_path = save_tower(fixtures.tiny_text_encoder(), str(tmp_path / "text.safetensors"))
    with pytest.raises(FuseDreamError, match="projects to 16 dimensions but the text encoder to 32"):
        load_encoders_from_files(path, text_path)
    config = _infer_config(model.state_dict(), path, "vision")
    assert config == {"hidden_size": 768, "num_attention_heads": 12, "projection_dim": 16, "num_hidden_layers": 1,
                      "hidden_act": "gelu", "intermediate_size": 96, "patch_size": 16, "image_size": 32}


def test_bigg_text_tower_shapes_give_its_config():
    meta = {name: torch.empty(*shape, device="meta") for name, shape in {
        "text_model.embeddings.position_embedding.weight": (77, 1280),
        "text_model.embeddings.token_embedding.weight": (49408, 1280),
        "text_model.encoder.layers.0.mlp.fc1.weight": (5120, 1280),
        "text_model.encoder.layers.31.mlp.fc1.weight": (5120, 1280),
        "text_projection.weight": (1280, 1280)}.items()}
    config = _infer_config(meta, "clip_g.safetensors", "text")
    assert (config["num_attention_heads"], config["num_hidden_layers"], config["projection_dim"],
            config["vocab_size"], config["max_position_embeddings"]) == (20, 32, 1280, 49408, 77)


def test_unknown_width_without_a_config_names_the_sidecar_to_add(tmp_path):
    path = save_tower(fixtures.tiny_image_encoder(), str(tmp_path / "odd.safetensors"), sidecar=False)
    with pytest.raises(FuseDreamError, match="no known head count for a 32-wide CLIP vision tower.*'odd.json'"):
        load_encoders_from_files(path, path)


def test_open_clip_layout_or_a_truncated_file_is_refused(tmp_path, tower_files):
    path = str(tmp_path / "open_clip_layout.safetensors")
    save_file({"visual.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(3, 3)}, path)
    with pytest.raises(FuseDreamError, match="not a transformers CLIPVisionModelWithProjection state dict"):
        load_encoders_from_files(path, tower_files[1])
    state = fixtures.tiny_image_encoder().state_dict()
    del state["vision_model.post_layernorm.weight"]
    truncated = str(tmp_path / "truncated.safetensors")
    save_file({k: v.contiguous() for k, v in state.items()}, truncated)
    with open(str(tmp_path / "truncated.json"), "w") as f:
        json.dump(fixtures.tiny_image_encoder().config.to_dict(), f)
    with pytest.raises(FuseDreamError, match="missing.*post_layernorm.weight"):
        load_encoders_from_files(truncated, tower_files[1])


def test_the_single_file_loader_node_lists_and_loads_comfyui_model_folders(tiny_models):
    from fusedream_pack.nodes.kandinsky import EncodersFromFiles

    for sub, model, name in [("clip_vision", fixtures.tiny_image_encoder(), "clip_vision_tiny.safetensors"),
                             ("text_encoders", fixtures.tiny_text_encoder(), "clip_tiny.safetensors")]:
        os.makedirs(os.path.join(tiny_models, sub), exist_ok=True)
        save_tower(model, os.path.join(tiny_models, sub, name))
    spec = EncodersFromFiles.INPUT_TYPES()["required"]
    assert "clip_vision_tiny.safetensors" in spec["image_encoder"][0]
    assert "clip_tiny.safetensors" in spec["text_encoder"][0]
    with torch.inference_mode():
        (encoders,) = EncodersFromFiles().load("clip_vision_tiny.safetensors", "clip_tiny.safetensors", "fp32")
    assert encoders.embed_dim == fixtures.EMBED_DIM
