"""Broken, foreign or missing files are named errors ([FuseDream] + the file), never raw library exceptions."""
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from fusedream_pack.fusedream_ops.core.checkpoints import atomic_write_text, read_state_dict
from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fixtures import kandinsky as kandinsky_fixtures
from fusedream_pack.fusedream_ops.fixtures.biggan_clip import TINY_CLIP_CONFIG, tiny_clip
from fusedream_pack.fusedream_ops.models.biggan import load_biggan
from fusedream_pack.fusedream_ops.models.clip import load_clip, save_clip
from fusedream_pack.fusedream_ops.models.kandinsky import load_decoder, load_encoders, load_encoders_from_files
from fusedream_pack.fusedream_ops.ovi.reference_stats import FORMAT, load_reference_stats
from fusedream_pack.nodes import comfy
from testkit import kandinsky_models as km


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / os.path.basename(folder))


# ---------------------------------------------------------------- Kandinsky folders
def test_a_truncated_kandinsky_text_encoder_is_an_error_naming_the_file(tmp_path):
    folder = _copy(km.prior_folder(), tmp_path)
    weights = folder / "text_encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    with pytest.raises(FuseDreamError, match=r"text_encoder/model\.safetensors.*re-download"):
        load_encoders(str(folder))


def test_a_garbage_pickle_in_the_decoder_is_an_error_naming_the_file(tmp_path):
    folder = _copy(km.decoder_folder(), tmp_path)
    os.remove(folder / "movq" / "diffusion_pytorch_model.safetensors")
    (folder / "movq" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x02not a pickle at all")
    with pytest.raises(FuseDreamError, match=r"movq/diffusion_pytorch_model\.bin.*not a complete PyTorch checkpoint"):
        load_decoder(str(folder))


@pytest.mark.parametrize("text, message", [("{\"block_out_channels\": [32,", "is not valid JSON"),
                                           ("[1, 2]", "must hold a JSON object")])
def test_an_invalid_or_non_object_config_json_is_an_error_naming_it(tmp_path, text, message):
    folder = _copy(km.decoder_folder(), tmp_path)
    (folder / "unet" / "config.json").write_text(text)
    with pytest.raises(FuseDreamError, match=rf"unet/config\.json' {message}"):
        load_decoder(str(folder))
    prior = _copy(km.prior_folder(), tmp_path)
    (prior / "image_encoder" / "config.json").write_text(text)
    with pytest.raises(FuseDreamError, match=rf"image_encoder/config\.json' {message}"):
        load_encoders(str(prior))


def test_a_single_file_tower_whose_config_describes_another_width_is_refused_naming_the_shapes(tmp_path):
    model = kandinsky_fixtures.tiny_image_encoder()
    path = str(tmp_path / "tower.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    (tmp_path / "tower.json").write_text(json.dumps({**model.config.to_dict(), "hidden_size": 4096,
                                                     "intermediate_size": 16384}))
    with pytest.raises(FuseDreamError, match=r"tower\.safetensors.*hidden_size is 4096 but the checkpoint has 32"):
        load_encoders_from_files(path, path)
    (tmp_path / "tower.json").write_text("not json")
    with pytest.raises(FuseDreamError, match=r"tower\.json' is not valid JSON"):
        load_encoders_from_files(path, path)


# ---------------------------------------------------------------- BigGAN and CLIP files
@pytest.mark.parametrize("text, message", [("{oops", "is not valid JSON"), ("\"a string\"", "must hold a JSON object"),
                                           (None, "does not describe a BigGAN-deep")])
def test_a_broken_biggan_config_is_an_error_naming_it(tmp_path, tiny_models, text, message):
    folder = shutil.copytree(os.path.join(tiny_models, "biggan", "biggan-deep-256"), tmp_path / "g")
    if text is None:
        text = json.dumps({**json.loads((folder / "config.json").read_text()), "channel_width": "wide"})
    (folder / "config.json").write_text(text)
    with pytest.raises(FuseDreamError, match=rf"config\.json'? {message}"):
        load_biggan(str(folder))


def test_a_broken_clip_sidecar_is_an_error_naming_it(tmp_path):
    path = str(tmp_path / "c.safetensors")
    save_clip(tiny_clip(), path, TINY_CLIP_CONFIG)
    (tmp_path / "c.json").write_text("{\"model_cfg\": ")
    with pytest.raises(FuseDreamError, match=r"CLIP sidecar '.*c\.json' is not valid JSON"):
        load_clip("auto", path)
    (tmp_path / "c.json").write_text(json.dumps({"model_cfg": [1]}))
    with pytest.raises(FuseDreamError, match=r"'model_cfg' of the CLIP sidecar .* must be a JSON object"):
        load_clip("auto", path)


def test_a_folder_named_like_a_checkpoint_is_called_a_folder(tmp_path):
    (tmp_path / "x.safetensors").mkdir()
    with pytest.raises(FuseDreamError, match="x.safetensors' is a folder, not a file"):
        load_clip("auto", str(tmp_path / "x.safetensors"))


def test_a_missing_model_says_where_to_get_it_and_about_models(tmp_path, tiny_models):
    for load in (lambda: load_clip("auto", str(tmp_path / "absent.safetensors")),
                 lambda: load_biggan(str(tmp_path / "absent.safetensors")),
                 lambda: comfy.resolve_model_entry("open_clip", "absent.safetensors")):
        with pytest.raises(FuseDreamError, match="absent.safetensors.*Which weight file goes where.*--models"):
            load()


def test_an_empty_or_truncated_pickle_is_not_told_to_convert(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(FuseDreamError, match="is empty") as err:
        read_state_dict(str(tmp_path / "empty.pt"))
    assert "convert" not in str(err.value).replace(str(tmp_path), "")
    torch.save({"w": torch.zeros(1000)}, tmp_path / "whole.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:600])
    with pytest.raises(FuseDreamError, match="not a complete PyTorch checkpoint") as err:
        read_state_dict(str(tmp_path / "cut.pt"))
    assert "convert" not in str(err.value).replace(str(tmp_path), "")


def test_writing_onto_a_folder_names_the_folder_not_a_temporary_file(tmp_path):
    (tmp_path / "out.png").mkdir()
    with pytest.raises(FuseDreamError, match="out.png' is a folder") as err:
        atomic_write_text(str(tmp_path / "out.png"), "x")
    assert ".tmp-" not in str(err.value)


# ---------------------------------------------------------------- reference statistics
def _stats(tmp_path, mean, cov, bank, shrinkage="0.5"):
    path = str(tmp_path / "stats.safetensors")
    save_file({"mean": mean, "covariance": cov, "bank": bank}, path,
              metadata={"format": FORMAT, "shrinkage": shrinkage, "count": "1", "source": ""})
    return path


@pytest.mark.parametrize("case, message", [
    ("singular", "not positive definite"), ("empty bank", "empty embedding bank"),
    ("shrinkage", "shrinkage 'abc' is not a number"), ("scalar mean", "inconsistent shapes"),
    ("nan", "NaN or infinite")])
def test_broken_reference_statistics_are_errors_naming_the_file(tmp_path, case, message):
    d = 4
    mean, cov, bank, shrinkage = torch.zeros(d), torch.eye(d), torch.randn(3, d), "0.5"
    if case == "singular":
        cov = torch.zeros(d, d)
    elif case == "empty bank":
        bank = torch.zeros(0, d)
    elif case == "shrinkage":
        shrinkage = "abc"
    elif case == "scalar mean":
        mean = torch.tensor(0.0)
    elif case == "nan":
        mean = torch.full((d,), float("nan"))
    with pytest.raises(FuseDreamError, match=f"stats.safetensors.*{message}"):
        load_reference_stats(_stats(tmp_path, mean, cov, bank, shrinkage))
