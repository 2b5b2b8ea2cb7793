"""pytest plugin for mutation runs: the tests import the pack as ``fusedream_pack`` (by file path, see
tests/conftest.py), but mutmut names its mutants after the top-level module ``fusedream_ops.<module>``. This plugin
imports mutmut's mutated ``fusedream_ops`` once as a top-level package and registers every submodule under
``fusedream_pack.fusedream_ops.<module>`` too, so the tests run the mutated code and the trampolines recognise it.
"""
import importlib
import importlib.util
import os
import pkgutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # as tests/conftest.py, which loads after this plugin
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = os.getcwd()  # mutmut runs pytest inside its mutants/ copy


def _alias_pack() -> None:
    if "fusedream_pack" in sys.modules:
        return
    sys.path.insert(0, ROOT)
    ops = importlib.import_module("fusedream_ops")
    names = ["fusedream_ops"] + [info.name for info in pkgutil.walk_packages(ops.__path__, "fusedream_ops.")
                                 if not info.name.endswith("__main__")]
    for name in names:
        sys.modules["fusedream_pack." + name] = importlib.import_module(name)
    spec = importlib.util.spec_from_file_location("fusedream_pack", os.path.join(ROOT, "__init__.py"),
                                                  submodule_search_locations=[ROOT])
    pack = importlib.util.module_from_spec(spec)
    pack.fusedream_ops = ops
    sys.modules["fusedream_pack"] = pack
    spec.loader.exec_module(pack)


_alias_pack()
