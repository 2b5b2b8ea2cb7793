"""The README's two commands work from the folder users clone into (``ComfyUI-FuseDream``, not an identifier)."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys

from testkit import ROOT
from testkit.hang_guard import HANG_S

_SKIP_ANYWHERE = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".pytest_cache", "*.png", "node_modules", "mutants")
_SKIP_AT_TOP = {"tiny-models", "models"}  # the checkout's own model folders, not the library's fusedream_ops/models


def SKIP(folder, names):
    """What a copy of the checkout leaves out: build outputs anywhere, the user's model folders at its top."""
    top = {n for n in names if n in _SKIP_AT_TOP} if os.path.samefile(folder, ROOT) else set()
    return set(_SKIP_ANYWHERE(folder, names)) | top


def _readme_commands():
    block = re.search(r"## Two commands on a fresh machine\n\n```bash\n(.*?)```", open(os.path.join(ROOT, "README.md")).read(),
                      re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def _ci_commands():
    text = open(os.path.join(ROOT, ".ci", "run")).read()
    return [re.search(rf"^{name}='(.*)'$", text, re.M).group(1) for name in ("install", "tests")]


def test_ci_runs_exactly_the_readme_commands():
    assert _readme_commands() == _ci_commands()


def test_ci_runs_them_in_a_folder_named_like_the_install_folder():
    assert "custom_nodes/ComfyUI-FuseDream" in open(os.path.join(ROOT, ".ci", "run")).read()


def test_tests_pass_in_a_checkout_named_comfyui_fusedream(tmp_path):
    checkout = tmp_path / "ComfyUI" / "custom_nodes" / "ComfyUI-FuseDream"
    shutil.copytree(ROOT, checkout, ignore=SKIP)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "tests/composition/test_geometry.py"], cwd=checkout,
                         capture_output=True, text=True, timeout=HANG_S)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert re.search(r"\d+ passed", run.stdout)


def test_comfyui_registers_the_nodes_from_that_folder(tmp_path):
    """ComfyUI imports ``custom_nodes/<folder>/__init__.py`` by path under the folder's name."""
    checkout = tmp_path / "ComfyUI-FuseDream"
    shutil.copytree(ROOT, checkout, ignore=SKIP)
    spec = importlib.util.spec_from_file_location("ComfyUI-FuseDream", checkout / "__init__.py",
                                                  submodule_search_locations=[str(checkout)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        assert "FuseDreamBasisOptimizer" in module.NODE_CLASS_MAPPINGS
        assert module.WEB_DIRECTORY == "./web/js"
    finally:
        for name in [n for n in sys.modules if n == spec.name or n.startswith(spec.name + ".")]:
            del sys.modules[name]
