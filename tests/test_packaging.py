"""`pip install <checkout>` installs the library ``fusedream_ops`` (with its data files and console commands) and
nothing of the ComfyUI side (the repository root ``__init__.py`` and ``nodes/`` stay a custom_nodes folder)."""
import configparser
import importlib
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from testkit import ROOT
from testkit.hang_guard import HANG_S

COMMANDS = {"fusedream", "fusedream-batch", "fusedream-evaluate", "fusedream-fixtures", "fusedream-convert",
            "fusedream-clipag-finetune", "fusedream-toyworld-build"}


def _source_copy(tmp_path) -> str:
    """The files a build reads, copied out so the build leaves nothing (build/, *.egg-info) in the checkout."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    for name in ("fusedream_ops", "nodes"):
        shutil.copytree(os.path.join(ROOT, name), src / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "__init__.py"), src / "__init__.py")
    return str(src)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("setuptools", minversion="70.1")  # builds wheels without the separate `wheel` package
    tmp = tmp_path_factory.mktemp("wheel")
    out = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    _source_copy(tmp), "-w", str(out)], check=True, capture_output=True, timeout=HANG_S)
    (path,) = out.glob("*.whl")
    return str(path)


def test_wheel_holds_the_library_its_data_and_subpackages_and_not_the_comfyui_layer(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("fusedream_ops/__init__.py", "fusedream_ops/models/data/imagenet_classes.txt",
                   "fusedream_ops/batch/__init__.py", "fusedream_ops/batch/__main__.py",
                   "fusedream_ops/evaluation/__init__.py", "fusedream_ops/evaluation/__main__.py",
                   "fusedream_ops/fixtures/__init__.py", "fusedream_ops/toyworld/world.py"):
        assert needed in names
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"fusedream_ops"}


def test_wheel_declares_every_command_and_each_resolves_to_a_main_function(wheel):
    with zipfile.ZipFile(wheel) as z:
        entry = next(n for n in z.namelist() if n.endswith("entry_points.txt"))
        parser = configparser.ConfigParser()
        parser.read_string(z.read(entry).decode())
        metadata = z.read(next(n for n in z.namelist() if n.endswith("METADATA"))).decode()
    scripts = dict(parser["console_scripts"])
    assert set(scripts) == COMMANDS
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module("fusedream_pack." + module), func))
    assert "Provides-Extra: ray" in metadata and "Provides-Extra: eval" in metadata


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FUSEDREAM_SLOW") != "1", reason="slow: set FUSEDREAM_SLOW=1")
def test_installed_wheel_works_outside_the_checkout(wheel, tmp_path):
    """A fresh venv gets the wheel; its dependencies come from this interpreter's site-packages (a .pth line),
    so nothing is downloaded. The commands then run from a folder with no checkout in it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=HANG_S)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    with open(os.path.join(site, "outer-deps.pth"), "w") as f:
        f.write("\n".join(deps) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], check=True,
                   timeout=HANG_S)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    where = subprocess.run([str(py), "-c", "import fusedream_ops, fusedream_ops.models.imagenet_classes as i; "
                            "print(fusedream_ops.__file__, len(i.IMAGENET_CLASSES))"],
                           cwd=work, env=env, check=True, capture_output=True, text=True).stdout
    assert site in where and where.strip().endswith("1000")
    subprocess.run([str(venv / "bin" / "fusedream-fixtures"), "models"], cwd=work, env=env, check=True, timeout=HANG_S)
    subprocess.run([str(venv / "bin" / "fusedream"), "a red circle", "--models", "models", "--candidates", "4",
                    "--k", "2", "--steps", "2", "--copies", "2", "-o", "out.png"],
                   cwd=work, env=env, check=True, timeout=HANG_S)
    assert (work / "out.png").stat().st_size > 0
    for command in ("fusedream-batch", "fusedream-evaluate"):
        subprocess.run([str(venv / "bin" / command), "--help"], cwd=work, env=env, check=True, timeout=HANG_S,
                       capture_output=True)
