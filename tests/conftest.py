"""Test setup: strictly offline, deterministic, and the pack imported by file path as ComfyUI imports it.

Tests import the pack as ``fusedream_pack`` (``from fusedream_pack.fusedream_ops import ...``,
``from fusedream_pack.nodes import ...``) so ops and nodes share one module identity, and the relative
imports ComfyUI relies on are exercised.
"""
import importlib.util
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import torch  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)  # ``import testkit`` from any test folder, whatever pytest's import mode

if "fusedream_pack" not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        "fusedream_pack", os.path.join(ROOT, "__init__.py"), submodule_search_locations=[ROOT]
    )
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["fusedream_pack"] = _module
    _spec.loader.exec_module(_module)

torch.set_num_threads(1)  # tiny models: a second thread only oversubscribes a busy machine


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A models/ tree of tiny random checkpoints written by the fixture command, used as the models root."""
    from fusedream_pack.fusedream_ops.fixtures import write_all
    from fusedream_pack.nodes import comfy

    root = str(tmp_path_factory.mktemp("models"))
    write_all(root)
    comfy.set_fallback_model_root(root)
    return root


@pytest.fixture(scope="session")
def tiny_generator(tiny_models):
    from fusedream_pack.fusedream_ops.models.biggan import load_biggan

    return load_biggan(os.path.join(tiny_models, "biggan", "biggan-deep-256"))


@pytest.fixture(scope="session")
def tiny_scorer(tiny_models):
    from fusedream_pack.fusedream_ops.models.clip import load_clip

    return load_clip("auto", os.path.join(tiny_models, "open_clip", "ViT-B-32.safetensors"))
