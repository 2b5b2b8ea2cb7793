"""What the tests share: the checkout's paths, and (in the modules beside this one) the tiny Kandinsky folders,
ComfyUI-graph helpers and hostile values. tests/conftest.py puts tests/ on sys.path, so tests import
``from testkit import ROOT`` wherever they sit in the tree."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The checkout (the folder holding ``__init__.py``, ``nodes/``, ``fusedream_ops/``)."""
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
"""Committed fixtures (the toy worlds)."""
