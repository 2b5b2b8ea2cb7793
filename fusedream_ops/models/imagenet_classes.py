"""Class names: ImageNet's 1000 (shipped as data, no nltk/WordNet at run time) and lookup by name or index."""
from __future__ import annotations

import difflib
import os
import re

from ..core.errors import FuseDreamError

with open(os.path.join(os.path.dirname(__file__), "data", "imagenet_classes.txt"), encoding="utf-8") as _f:
    IMAGENET_CLASSES: tuple[str, ...] = tuple(line.strip() for line in _f if line.strip())


def parse_class_list(text: str, class_names: list[str] | None, num_classes: int) -> list[int] | None:
    """Class indices from a comma/newline separated list of names or indices; None for an empty list (= all).

    A name matches case-insensitively; an unknown name is an error that suggests the closest names.
    """
    entries = [e.strip() for e in re.split(r"[,\n;]", text or "") if e.strip()]
    if not entries:
        return None
    lookup = {n.lower(): i for i, n in enumerate(class_names or [])}
    indices = []
    for entry in entries:
        if entry.isdigit():
            index = int(entry)
            if not 0 <= index < num_classes:
                raise FuseDreamError(f"classes: index {index} is out of range; valid indices are 0..{num_classes - 1}.")
            indices.append(index)
        elif entry.lower() in lookup:
            indices.append(lookup[entry.lower()])
        elif not class_names:
            raise FuseDreamError(f"classes: '{entry}' is not an index, and this generator has no class names; "
                                 f"use indices 0..{num_classes - 1}.")
        else:
            close = difflib.get_close_matches(entry.lower(), list(lookup), n=5, cutoff=0.5)
            contains = [n for n in lookup if entry.lower() in n][:5]
            hints = list(dict.fromkeys(close + contains))[:5]
            hint = f" Did you mean: {', '.join(hints)}?" if hints else ""
            raise FuseDreamError(f"classes: no class named '{entry}'.{hint}")
    return indices
