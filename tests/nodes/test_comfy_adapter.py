"""nodes/comfy.py against a stand-in of ComfyUI's folder_paths module (ComfyUI itself is not installable here)."""
import sys
import types

import pytest

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.nodes import comfy


@pytest.fixture
def folder_paths(monkeypatch, tmp_path):
    module = types.ModuleType("folder_paths")
    module.models_dir = str(tmp_path / "models")
    module.folder_names_and_paths = {"biggan": ([str(tmp_path / "user_biggan")], {".pth"})}
    module.get_folder_paths = lambda name: module.folder_names_and_paths[name][0]
    monkeypatch.setitem(sys.modules, "folder_paths", module)
    return module


def test_registering_keeps_the_users_extra_model_paths_first(folder_paths, tmp_path):
    comfy.register_model_folder("biggan", (".safetensors",))
    comfy.register_model_folder("biggan", (".safetensors",))
    paths, extensions = folder_paths.folder_names_and_paths["biggan"]
    assert paths == [str(tmp_path / "user_biggan"), str(tmp_path / "models" / "biggan")]
    assert extensions == {".safetensors"}


def test_a_new_folder_is_created_under_models(folder_paths, tmp_path):
    comfy.register_model_folder("open_clip", (".pt",))
    assert folder_paths.folder_names_and_paths["open_clip"][0] == [str(tmp_path / "models" / "open_clip")]


def test_entries_are_listed_from_every_path_and_a_missing_one_names_the_folders(folder_paths, tmp_path):
    (tmp_path / "user_biggan" / "biggan-deep-512").mkdir(parents=True)
    (tmp_path / "models" / "biggan" / "biggan-deep-128").mkdir(parents=True)
    (tmp_path / "models" / "biggan" / "single.safetensors").write_bytes(b"")
    comfy.register_model_folder("biggan", (".safetensors",))
    assert comfy.list_model_entries("biggan", want_dirs=True) == ["biggan-deep-128", "biggan-deep-512"]
    assert comfy.list_model_entries("biggan", want_dirs=False, extensions=(".safetensors",)) == ["single.safetensors"]
    assert comfy.resolve_model_entry("biggan", "biggan-deep-512").endswith("user_biggan/biggan-deep-512")
    with pytest.raises(FuseDreamError, match="'nope' was not found in models/biggan.*user_biggan"):
        comfy.resolve_model_entry("biggan", "nope")
