"""Hostile files and names: a pickle never runs without --trust, paths stay inside the allowed folders, loading is
offline and compares a config with the checkpoint before allocating it."""
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from fusedream_pack.fusedream_ops.core.checkpoints import read_state_dict
from fusedream_pack.fusedream_ops.core.convert import main as convert_main
from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fixtures import kandinsky as kandinsky_fixtures
from fusedream_pack.fusedream_ops.fixtures.biggan_clip import TINY_CLIP_CONFIG, tiny_clip
from fusedream_pack.fusedream_ops.models.clip import load_clip, save_clip
from fusedream_pack.fusedream_ops.safety.pickle_globals import pickle_globals
from fusedream_pack.nodes import comfy
from testkit import ROOT
from testkit.hang_guard import HANG_S
from testkit.workflows import run_node


class MakesAMarker:
    """Unpickling this calls ``os.mkdir(marker)``: the stand-in for a command a hostile checkpoint would run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture
def hostile(tmp_path):
    """Two hostile checkpoints (torch's zip format, protocol 2; a bare pickle, protocol 4) and the marker path."""
    marker = str(tmp_path / "MARKER")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": MakesAMarker(marker)}, tmp_path / "zip.pt")
    with open(tmp_path / "bare.pt", "wb") as f:
        pickle.dump({"w": torch.zeros(2), "extra": MakesAMarker(marker)}, f, protocol=4)
    return [str(tmp_path / "zip.pt"), str(tmp_path / "bare.pt")], marker


# ---------------------------------------------------------------- converting a pickle is an act of trust
def test_the_globals_of_a_hostile_pickle_are_read_without_running_it(hostile):
    files, marker = hostile
    for path in files:
        found = pickle_globals(path)
        assert f"{os.mkdir.__module__}.mkdir" in found.dangerous
        assert not found.only_containers
    assert not os.path.exists(marker)


def test_loaders_refuse_a_hostile_pickle_naming_it_dangerous_and_never_suggest_converting_it(hostile):
    files, marker = hostile
    for path in files:
        with pytest.raises(FuseDreamError, match="DANGEROUS.*mkdir.*do not load or convert") as err:
            read_state_dict(path)
        assert "python -m fusedream_ops.core.convert" not in str(err.value)
        assert "weights_only=False" not in str(err.value)
    assert not os.path.exists(marker)


def test_convert_refuses_a_hostile_pickle_without_trust_and_runs_it_only_with_trust(hostile, capsys):
    files, marker = hostile
    for path in files:
        assert convert_main([path]) == 2
        err = capsys.readouterr().err
        assert err.startswith("[FuseDream]") and "mkdir" in err and "do not convert it" in err
        assert not os.path.exists(marker)
    assert convert_main([files[0], "--trust"]) == 0  # the marker proves this test would see the code run
    assert os.path.isdir(marker)


def test_a_hostile_pickle_in_a_kandinsky_folder_is_refused_before_diffusers_reads_it(hostile, tmp_path):
    import shutil

    from safetensors.torch import load_file

    from fusedream_pack.fusedream_ops.models.kandinsky import load_decoder
    from testkit import kandinsky_models as km

    files, marker = hostile
    folder = shutil.copytree(km.decoder_folder(), tmp_path / "decoder")
    movq = folder / "movq"
    torch.save(load_file(str(movq / "diffusion_pytorch_model.safetensors")), movq / "diffusion_pytorch_model.bin")
    os.remove(movq / "diffusion_pytorch_model.safetensors")
    assert load_decoder(str(folder)).movq_scale == 8  # a plain .bin loads
    shutil.copy(files[0], movq / "diffusion_pytorch_model.bin")
    with pytest.raises(FuseDreamError, match=r"movq/diffusion_pytorch_model\.bin.*DANGEROUS"):
        load_decoder(str(folder))
    assert not os.path.exists(marker)


def test_the_convert_command_refuses_a_hostile_pickle_with_exit_code_2_and_no_traceback(hostile):
    files, marker = hostile
    run = subprocess.run([sys.executable, "-m", "fusedream_ops.core.convert", files[1]], cwd=ROOT, capture_output=True,
                         text=True, timeout=HANG_S)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "[FuseDream]" in run.stderr
    assert not os.path.exists(marker)


def test_a_checkpoint_pickling_only_plain_containers_is_told_to_convert_with_trust(tmp_path):
    import argparse

    path = str(tmp_path / "run.pt")
    torch.save({"args": argparse.Namespace(lr=1.0), "state_dict": {"w": torch.ones(2)}}, path)
    assert pickle_globals(path).only_containers
    with pytest.raises(FuseDreamError, match=r"argparse\.Namespace.*python -m fusedream_ops.core.convert .*--trust"):
        read_state_dict(path)
    assert convert_main([path]) == 2
    assert convert_main([path, "--trust"]) == 0
    assert torch.equal(read_state_dict(str(tmp_path / "run.safetensors"))["w"], torch.ones(2))


def test_convert_on_a_missing_empty_or_misnamed_file_is_a_named_error(tmp_path, capsys):
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "out.safetensors").mkdir()
    cases = {
        (str(tmp_path / "missing.pt"),): "does not exist",
        (str(tmp_path / "empty.pt"),): "is empty",
        (str(tmp_path / "ok.pt"), str(tmp_path / "ok.bin")): "must end in .safetensors",
        (str(tmp_path / "ok.pt"), str(tmp_path / "out.safetensors")): "is a folder",
    }
    for argv, message in cases.items():
        assert convert_main(list(argv)) == 2
        err = capsys.readouterr().err
        assert err.startswith("[FuseDream]") and message in err and "Traceback" not in err, (argv, err)
        assert "--trust" not in err
    assert convert_main([str(tmp_path / "ok.pt")]) == 0  # a tensors-only pickle needs no trust


# ---------------------------------------------------------------- paths stay where they belong
@pytest.fixture
def server(tmp_path, monkeypatch):
    """A server layout: models/open_clip with one checkpoint, input/, and an outside folder with a real checkpoint."""
    models, outside = tmp_path / "models", tmp_path / "outside"
    for folder in (models / "open_clip", tmp_path / "input", outside / "cats"):
        folder.mkdir(parents=True)
    save_clip(tiny_clip(seed=1), str(models / "open_clip" / "inside.safetensors"), TINY_CLIP_CONFIG)
    save_clip(tiny_clip(seed=2), str(outside / "secret.safetensors"), TINY_CLIP_CONFIG)
    for i in range(3):
        Image.new("RGB", (20, 20), (40 * i, 90, 160)).save(outside / "cats" / f"{i}.png")
    monkeypatch.setitem(comfy._fallback_roots, "root", [str(models)])
    monkeypatch.chdir(tmp_path)  # outside ComfyUI the input folder is ./input
    monkeypatch.delenv("FUSEDREAM_EXTRA_ROOTS", raising=False)
    return tmp_path


def _clip(checkpoint):
    return run_node("FuseDreamCLIPLoader", architecture="auto", checkpoint=checkpoint)["result"][0]


def test_model_names_that_climb_out_or_are_absolute_are_refused_even_when_the_node_is_called_directly(server):
    """Two guards: the node's input check (the name must be one of the listed files) and, below it, the resolver
    every loader goes through (nothing outside the registered folders), each tested on its own."""
    from fusedream_pack.nodes import comfy

    assert _clip("inside.safetensors").name == "inside"
    for name in ("../../outside/secret.safetensors", "../open_clip/../../outside/secret.safetensors",
                 str(server / "outside" / "secret.safetensors")):
        with pytest.raises(FuseDreamError, match="checkpoint must be one of 'inside.safetensors'"):
            _clip(name)
        with pytest.raises(FuseDreamError, match="absolute paths and '..' are refused"):
            comfy.resolve_model_entry("open_clip", name)


def test_a_symlink_out_of_a_model_folder_is_refused_whether_or_not_its_target_exists(server, monkeypatch):
    links = server / "models" / "open_clip"
    os.symlink(server / "outside" / "secret.safetensors", links / "leak.safetensors")
    os.symlink(server / "outside", links / "elsewhere")
    from fusedream_pack.nodes import comfy

    with pytest.raises(FuseDreamError, match="leads outside its model folder"):
        _clip("leak.safetensors")  # listed (it is in the folder), refused when resolved
    messages = []
    for name in ("leak.safetensors", "elsewhere/secret.safetensors", "elsewhere/absent.safetensors"):
        with pytest.raises(FuseDreamError, match="leads outside its model folder") as err:
            comfy.resolve_model_entry("open_clip", name)
        messages.append(str(err.value).replace(name, "NAME"))
    assert messages[1] == messages[2]  # an existing and a missing target give the same answer
    monkeypatch.setenv("FUSEDREAM_EXTRA_ROOTS", str(server / "outside"))
    os.symlink(server / "outside" / "secret.json", links / "leak.json")
    assert _clip("leak.safetensors").name == "leak"  # the owner's opt-in


def test_folder_inputs_outside_the_input_and_models_folders_are_refused_alike(server, monkeypatch):
    answers = []
    for folder in (str(server / "outside" / "cats"), str(server / "outside" / "dogs"), "../outside/cats"):
        with pytest.raises(FuseDreamError, match="not a folder inside the allowed roots") as err:
            run_node("FuseDreamReferenceImageGaussian", folder=folder)
        answers.append(str(err.value).replace(folder, "FOLDER"))
    assert answers[0] == answers[1]  # no hint whether the outside folder exists
    os.symlink(server / "outside" / "cats", server / "input" / "linked")
    with pytest.raises(FuseDreamError, match="not a folder inside the allowed roots"):
        run_node("FuseDreamReferenceImageGaussian", folder="linked")
    monkeypatch.setenv("FUSEDREAM_EXTRA_ROOTS", str(server / "outside"))  # the owner's opt-in
    (gaussian,) = run_node("FuseDreamReferenceImageGaussian", folder=str(server / "outside" / "cats"),
                           small_size=4)["result"]
    assert gaussian.means.shape[0] == 1
    monkeypatch.delenv("FUSEDREAM_EXTRA_ROOTS")
    os.rename(server / "outside" / "cats", server / "input" / "cats")
    run_node("FuseDreamReferenceImageGaussian", folder="cats", small_size=4)  # a name inside input/


def test_reference_statistics_built_from_a_folder_keep_only_its_root_relative_name(server):
    from testkit import kandinsky_models as km

    os.rename(server / "outside" / "cats", server / "input" / "cats")
    with pytest.raises(FuseDreamError, match="not a folder inside the allowed roots"):
        run_node("FuseDreamOVIReferenceStatsBuild", encoders=km.encoders(), folder=str(server / "outside"))
    run_node("FuseDreamOVIReferenceStatsBuild", encoders=km.encoders(), folder=str(server / "input" / "cats"),
             save_name="cats")
    with safe_open(str(server / "models" / "ovi_reference" / "cats.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["source"] == "input/cats" and str(server) not in json.dumps(meta)


# ---------------------------------------------------------------- offline and bounded loading
def test_a_clip_sidecar_with_unknown_keys_is_refused_naming_them_and_the_valid_ones(tmp_path):
    path = str(tmp_path / "c.safetensors")
    save_clip(tiny_clip(), path, {**TINY_CLIP_CONFIG, "surprise": 1})
    with pytest.raises(FuseDreamError, match="unknown keys surprise; valid keys: embed_dim, vision_cfg"):
        load_clip("auto", path)
    save_clip(tiny_clip(), path, {**TINY_CLIP_CONFIG, "vision_cfg": {**TINY_CLIP_CONFIG["vision_cfg"], "depth": 2}})
    with pytest.raises(FuseDreamError, match="'vision_cfg' of the CLIP sidecar .* unknown keys depth; valid keys: "
                                             "layers, width"):
        load_clip("auto", path)


@pytest.mark.parametrize("section, key, value", [("text_cfg", "hf_model_name", "bert-base-uncased"),
                                                 ("text_cfg", "hf_tokenizer_name", "bert-base-uncased"),
                                                 ("vision_cfg", "timm_model_pretrained", True)])
def test_a_clip_sidecar_asking_for_a_hub_tower_is_refused_before_anything_is_built(tmp_path, section, key, value):
    path = str(tmp_path / "c.safetensors")
    cfg = json.loads(json.dumps(TINY_CLIP_CONFIG))
    cfg[section][key] = value
    if key == "timm_model_pretrained":
        cfg[section]["timm_model_name"] = "vit_base_patch32_224"
    save_clip(tiny_clip(), path, cfg)
    with pytest.raises(FuseDreamError, match=f"{section}.{'timm_model_name' if 'timm' in key else key}"):
        load_clip("auto", path)


def test_a_built_in_architecture_with_a_hub_text_tower_is_refused(tmp_path):
    path = str(tmp_path / "c.safetensors")
    save_clip(tiny_clip(), path)
    with pytest.raises(FuseDreamError, match="open_clip architecture 'mt5-base-ViT-B-32' asks for text_cfg"):
        load_clip("mt5-base-ViT-B-32", path)


PEAK_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from fusedream_ops.models.biggan import load_biggan
from fusedream_ops.models.clip import load_clip
from fusedream_ops.models.kandinsky import load_decoder, load_encoders_from_files
from fusedream_ops.core.errors import FuseDreamError


def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


cases = json.loads(sys.argv[2])
load_biggan(cases["warm_biggan"]); load_clip("auto", cases["warm_clip"]); load_decoder(cases["warm_decoder"])
load_encoders_from_files(cases["warm_image"], cases["warm_text"])
peaks = {}
for name, load in (("biggan", lambda: load_biggan(cases["biggan"])), ("clip", lambda: load_clip("auto", cases["clip"])),
                   ("unet", lambda: load_decoder(cases["unet"])),
                   ("tower", lambda: load_encoders_from_files(cases["tower"], cases["warm_text"]))):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set size (VmHWM) to the current one
    before = status("VmRSS")
    try:
        load()
        outcome = "loaded"
    except FuseDreamError as exc:
        outcome = str(exc)
    peaks[name] = [status("VmHWM") - before, outcome]
print(json.dumps(peaks))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="measures the peak RSS through Linux's /proc")
def test_configs_describing_huge_models_fail_before_allocating_them(tmp_path, tiny_models):
    """Peak resident memory in a fresh process after warm-up loads, reset before each load. Unguarded, the BigGAN, CLIP and single-file
    tower configs allocate about 660, 390 and 200 MB (diffusers 0.42 itself checks the UNet before allocating)."""
    import shutil

    from testkit import kandinsky_models as km

    biggan = shutil.copytree(os.path.join(tiny_models, "biggan", "biggan-deep-256"), tmp_path / "biggan")
    config = json.loads((biggan / "config.json").read_text())
    (biggan / "config.json").write_text(json.dumps({**config, "channel_width": 400}))
    clip = str(tmp_path / "clip.safetensors")
    save_clip(tiny_clip(), clip, {**TINY_CLIP_CONFIG, "vision_cfg": {**TINY_CLIP_CONFIG["vision_cfg"], "width": 2048}})
    decoder = shutil.copytree(km.decoder_folder(), tmp_path / "decoder")
    unet = json.loads((decoder / "unet" / "config.json").read_text())
    (decoder / "unet" / "config.json").write_text(json.dumps({**unet, "block_out_channels": [384, 768]}))
    towers = {}
    for name, model, config in (("warm_image", kandinsky_fixtures.tiny_image_encoder(), {}),
                                ("warm_text", kandinsky_fixtures.tiny_text_encoder(), {}),
                                ("tower", kandinsky_fixtures.tiny_image_encoder(),
                                 {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                                  "num_hidden_layers": 4})):
        towers[name] = str(tmp_path / f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, towers[name])
        (tmp_path / f"{name}.json").write_text(json.dumps({**model.config.to_dict(), **config}))
    cases = {"biggan": str(biggan), "clip": clip, "unet": str(decoder), **towers,
             "warm_biggan": os.path.join(tiny_models, "biggan", "biggan-deep-256"),
             "warm_clip": os.path.join(tiny_models, "open_clip", "ViT-B-32.safetensors"),
             "warm_decoder": km.decoder_folder()}
    run = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, ROOT, json.dumps(cases)], capture_output=True,
                         text=True, timeout=HANG_S)
    assert run.returncode == 0, run.stderr[-2000:]
    peaks = json.loads(run.stdout.strip().splitlines()[-1])
    print(peaks)
    for name, (megabytes, outcome) in peaks.items():
        assert megabytes < 50, (name, megabytes, outcome)
        assert "another shape" in outcome or "does not match" in outcome, (name, outcome)
