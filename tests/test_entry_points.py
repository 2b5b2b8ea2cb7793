"""The public entry points survive the library's layout: the top-level API, every console script and every
``python -m`` command the README and docs/ name.

Checked: removing a name's room from ``fusedream_ops.PUBLIC`` / renaming a module under a documented ``python -m``
command / pointing a console script at a moved module each fails a test here."""
import importlib
import json
import os
import re
import subprocess
import sys

import pytest
import tomllib

import fusedream_pack.fusedream_ops as ops
from testkit import ROOT


def test_every_public_name_imports_from_the_top_level_and_from_its_room():
    for module, names in ops.PUBLIC.items():
        for name in names:
            assert getattr(ops, name) is getattr(sys.modules[f"fusedream_pack.fusedream_ops.{module}"], name)


def test_the_readme_python_example_imports_what_it_uses():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = re.search(r"## From Python.*?```python\n(.*?)```", readme, re.S).group(1)
    imports = [line for line in block.splitlines() if line.startswith(("from fusedream_ops", "import fusedream_ops"))]
    assert imports, "the README's Python example imports nothing from fusedream_ops"
    for line in imports:
        exec(line.replace("fusedream_ops", "fusedream_pack.fusedream_ops"), {})


def _console_scripts() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


@pytest.mark.parametrize("command", sorted(_console_scripts()))
def test_every_console_script_resolves_to_a_main_function(command):
    module, function = _console_scripts()[command].split(":")
    module = importlib.import_module("fusedream_pack." + module)
    assert callable(getattr(module, function))


def _documented_module_commands() -> list[str]:
    texts = [os.path.join(ROOT, "README.md")] + [os.path.join(ROOT, "docs", n) for n in os.listdir(
        os.path.join(ROOT, "docs")) if n.endswith(".md")]
    found = set()
    for path in texts:
        found |= set(re.findall(r"-m (fusedream_ops[\w.]*)", open(path, encoding="utf-8").read()))
    return sorted(found)


def test_the_docs_name_the_main_commands():
    assert {"fusedream_ops", "fusedream_ops.batch", "fusedream_ops.evaluation",
            "fusedream_ops.fixtures"} <= set(_documented_module_commands())


HELP_ALL = """
import contextlib, io, json, runpy, sys
answers = {}
for module in json.loads(sys.argv[1]):
    sys.argv = [module, "--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = None
    except SystemExit as exit:
        code = exit.code
    answers[module] = [code, out.getvalue()[:300]]
print(json.dumps(answers))
"""


def test_every_documented_python_m_command_answers_help():
    """Each command runs as ``python -m`` would run it (``runpy``), in one interpreter to keep the cost of imports
    once; ``--help`` must exit 0 with a usage line."""
    modules = _documented_module_commands()
    env = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", HELP_ALL, json.dumps(modules)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-2000:]
    answers = json.loads(run.stdout.strip().splitlines()[-1])
    for module in modules:
        code, text = answers[module]
        assert code in (0, None) and "usage" in text.lower(), (module, code, text)
