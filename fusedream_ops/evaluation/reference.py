"""Real-image statistics for FID, computed once from a folder of reference images and cached.

The cache file is named by the feature network and a hash of the folder's listing (relative path, size and
modification time of every image) and of the network's weights file, so adding, removing or replacing an image,
or changing the network, computes them afresh. It holds torchmetrics' FID states (sum, sum of outer products,
count) in safetensors.

Files without an image extension (``captions.json``, ``Thumbs.db``) are skipped with a logged line; a file with one
that is not a readable image, or declares too many pixels, is a [FuseDream] error naming it, found from the
headers before any feature is computed.
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Callable

import torch

from ..safety.image_files import IMAGE_EXTENSIONS
from ..core.checkpoints import atomic_write
from ..core.errors import require
from ..safety.image_files import check_image
from .extract import MAX_PIXELS
from .metrics import real_state

log = logging.getLogger("FuseDream")


def reference_images(folder: str) -> list[str]:
    require(os.path.isdir(folder), f"reference folder '{folder}' does not exist; give a folder of real images "
                                   f"(e.g. COCO val2014).")
    files = sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
                   if not name.startswith("."))
    paths = [p for p in files if p.lower().endswith(IMAGE_EXTENSIONS)]
    skipped = [os.path.relpath(p, folder) for p in files if not p.lower().endswith(IMAGE_EXTENSIONS)]
    if skipped:
        log.warning("[FuseDream] reference folder '%s': skipped %d file(s) that are not images (%s): %s%s",
                    folder, len(skipped), ", ".join(IMAGE_EXTENSIONS), ", ".join(skipped[:5]),
                    " …" if len(skipped) > 5 else "")
    require(len(paths) >= 2, f"reference folder '{folder}' holds {len(paths)} image(s); FID needs at least 2 "
                             f"({', '.join(IMAGE_EXTENSIONS)}).")
    return paths


def cache_key(folder: str, paths: list[str], network: str, network_path: str) -> str:
    h = hashlib.sha256(f"{network}\n".encode())
    for path in [network_path] + paths:
        st = os.stat(path)
        h.update(f"{os.path.relpath(path, folder)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fusedream", "reference-stats")


def reference_statistics(folder: str, network: str, network_path: str, cache_dir: str,
                         features: Callable[[list[str]], torch.Tensor]) -> tuple[dict, str, bool]:
    """(FID states, cache file, whether it came from the cache); ``features(paths)`` → pool features."""
    from safetensors.torch import load_file, save_file

    paths = reference_images(folder)
    cache = os.path.join(cache_dir, f"{network}-{cache_key(folder, paths, network, network_path)}.safetensors")
    if os.path.isfile(cache):
        return load_file(cache), cache, True
    for path in paths:
        check_image(path, "reference image", max_pixels=MAX_PIXELS)
    state = real_state(features(paths))
    atomic_write(cache, lambda p: save_file({k: v.contiguous() for k, v in state.items()}, p))
    return state, cache, False
