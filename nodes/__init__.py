"""Node families: every module here that defines ``NODE_CLASS_MAPPINGS`` is one family (one file each).

A family whose optional dependency is missing is skipped with a logged warning instead of breaking the pack.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
FAILED_FAMILIES: dict[str, str] = {}

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    try:
        _module = importlib.import_module(f".{_info.name}", __name__)
    except ImportError as exc:
        FAILED_FAMILIES[_info.name] = str(exc)
        logging.getLogger("FuseDream").warning("FuseDream: nodes/%s.py could not be imported: %s", _info.name, exc)
        continue
    NODE_CLASS_MAPPINGS.update(getattr(_module, "NODE_CLASS_MAPPINGS", {}))
    NODE_DISPLAY_NAME_MAPPINGS.update(getattr(_module, "NODE_DISPLAY_NAME_MAPPINGS", {}))
