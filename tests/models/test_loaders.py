"""BigGAN and open_clip checkpoints round-trip through the pack's loaders, strictly."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fixtures.biggan_clip import TINY_CLIP_CONFIG, tiny_biggan, tiny_clip
from fusedream_pack.fusedream_ops.models.biggan import BigGANGenerator, load_biggan, save_biggan
from fusedream_pack.fusedream_ops.models.clip import load_clip, matching_architectures, save_clip


def _reference_images(model, z, y):
    with torch.no_grad():
        return (model.eval().generator(torch.cat([z, y], 1), 1.0) + 1) / 2


@pytest.fixture
def biggan_and_inputs():
    model = tiny_biggan(seed=3)
    z = torch.randn(2, model.config.z_dim, generator=torch.Generator().manual_seed(0))
    y = model.embeddings.weight.t()[torch.tensor([1, 7])].detach()
    return model, z, y


def test_biggan_folder_round_trip_generates_the_same_images(tmp_path, biggan_and_inputs):
    model, z, y = biggan_and_inputs
    expected = _reference_images(model, z, y)
    generator = load_biggan(save_biggan(model, str(tmp_path / "g")))
    with torch.no_grad():
        assert torch.allclose(generator(z, y), expected, atol=1e-5)
    assert generator.resolution == 32 and generator.class_names[207] == "golden retriever"


def test_biggan_pickle_bin_loads_with_weights_only(tmp_path, biggan_and_inputs):
    model, z, y = biggan_and_inputs
    folder = tmp_path / "g"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(model.config.to_json_string())
    with torch.no_grad():
        assert torch.allclose(load_biggan(str(folder))(z, y), _reference_images(model, z, y), atol=1e-5)


def test_single_safetensors_file_infers_its_config_from_the_shapes(tmp_path, biggan_and_inputs):
    model, z, y = biggan_and_inputs
    path = tmp_path / "lonely.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    generator = load_biggan(str(path))
    assert generator.config.layers == [tuple(l) for l in model.config.layers]
    with torch.no_grad():
        assert torch.allclose(generator(z, y), _reference_images(model, z, y), atol=1e-5)


def test_a_missing_weight_is_an_error_that_names_it(tmp_path, biggan_and_inputs):
    folder = save_biggan(biggan_and_inputs[0], str(tmp_path / "g"))
    state = load_file(os.path.join(folder, "model.safetensors"))
    del state["generator.conv_to_rgb.bias"]
    save_file(state, os.path.join(folder, "model.safetensors"))
    with pytest.raises(FuseDreamError, match=r"\[FuseDream\].*missing.*generator\.conv_to_rgb\.bias"):
        load_biggan(folder)


def test_a_folder_without_config_json_says_what_the_layout_is(tmp_path):
    (tmp_path / "g").mkdir()
    with pytest.raises(FuseDreamError, match="no config.json.*pytorch_model.bin"):
        load_biggan(str(tmp_path / "g"))


def test_a_checkpoint_for_another_resolution_is_refused_with_both_resolutions(tmp_path, biggan_and_inputs):
    folder = save_biggan(biggan_and_inputs[0], str(tmp_path / "g"))
    config = json.loads(open(os.path.join(folder, "config.json")).read())
    config["layers"] = config["layers"] + [[True, 1, 1]]
    open(os.path.join(folder, "config.json"), "w").write(json.dumps(config))
    with pytest.raises(FuseDreamError, match=r"does not match.*32px.*64px"):
        load_biggan(folder)


def test_a_truncated_checkpoint_is_an_error_not_a_crash(tmp_path, biggan_and_inputs):
    folder = save_biggan(biggan_and_inputs[0], str(tmp_path / "g"))
    path = os.path.join(folder, "model.safetensors")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(FuseDreamError, match="Could not read checkpoint"):
        load_biggan(folder)


def test_generator_weights_are_frozen_and_spectral_norm_folded(tiny_generator):
    assert isinstance(tiny_generator, BigGANGenerator)
    assert not any(p.requires_grad for p in tiny_generator.parameters())
    assert not any(hasattr(m, "weight_orig") for m in tiny_generator.modules())


def _clip_inputs():
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return images, ["a red circle", "a blue square"]


def test_clip_checkpoint_with_sidecar_json_loads_in_auto_mode(tmp_path):
    model = tiny_clip(seed=1)
    path = save_clip(model, str(tmp_path / "tiny.safetensors"), TINY_CLIP_CONFIG)
    scorer = load_clip("auto", path)
    images, texts = _clip_inputs()
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.eval().encode_image(scorer.prepare(images)), dim=-1)
        assert torch.allclose(scorer.encode_images(images), expected, atol=1e-5)
        assert scorer.encode_text(texts).shape == (2, TINY_CLIP_CONFIG["embed_dim"])


def test_training_checkpoint_with_state_dict_and_module_prefix_loads_strictly(tmp_path):
    model = tiny_clip(seed=2)
    save_clip(model, str(tmp_path / "clipag.pt"), TINY_CLIP_CONFIG)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "clipag.pt")
    scorer = load_clip("auto", str(tmp_path / "clipag.pt"))
    assert torch.equal(scorer.model.visual.conv1.weight, model.visual.conv1.weight)


def test_wrong_architecture_is_refused_and_points_at_the_sidecar(tmp_path):
    path = save_clip(tiny_clip(), str(tmp_path / "tiny.safetensors"), TINY_CLIP_CONFIG)
    with pytest.raises(FuseDreamError, match=r"architecture 'ViT-B-16'.*choose architecture 'auto'"):
        load_clip("ViT-B-16", path)


def test_shape_detection_recognises_vit_b_32_before_its_quickgelu_twin():
    import open_clip

    state = open_clip.create_model("ViT-B-32", pretrained=None, device="meta").state_dict()
    found = matching_architectures(state)
    assert found[0] == "ViT-B-32" and "ViT-B-32-quickgelu" in found


def test_clip_weights_are_frozen(tiny_scorer):
    assert not any(p.requires_grad for p in tiny_scorer.model.parameters())


def test_a_pickle_with_python_objects_is_refused_and_converts_once_trusted(tmp_path):
    import argparse

    from fusedream_pack.fusedream_ops.core.convert import convert

    model = tiny_clip(seed=4)
    save_clip(model, str(tmp_path / "run.pt"), TINY_CLIP_CONFIG)
    torch.save({"args": argparse.Namespace(lr=1e-5), "state_dict": {f"module.{k}": v for k, v in
                                                                    model.state_dict().items()}}, tmp_path / "run.pt")
    with pytest.raises(FuseDreamError, match="python -m fusedream_ops.core.convert"):
        load_clip("auto", str(tmp_path / "run.pt"))
    with pytest.raises(FuseDreamError, match="--trust"):
        convert(str(tmp_path / "run.pt"), str(tmp_path / "run.safetensors"))
    convert(str(tmp_path / "run.pt"), str(tmp_path / "run.safetensors"), trust=True)
    scorer = load_clip("auto", str(tmp_path / "run.safetensors"))
    assert torch.equal(scorer.model.visual.conv1.weight, model.visual.conv1.weight)
    assert oct(os.stat(tmp_path / "run.safetensors").st_mode & 0o777) != oct(0o600)
