"""Every file a loader or folder reader opens resolves inside its root.

Checking a model name or a folder input (:mod:`.paths`) is not enough: the entry it names may hold symbolic links,
and a loader following ``models/x/config.json -> /home/me/.ssh/id_rsa`` or an image folder holding a link to a folder
of private photos would read what the server never offered. So each file is used only if its fully resolved path
(``os.path.realpath``) lies inside one of the allowed roots, and the resolved path is what gets opened (a link swapped
after the check is not followed again). Loaders refuse a folder with any link leading out, before a library
(``from_pretrained``) reads it, because a model missing one of its files is broken anyway; folder readers skip such a
member and log why, because the other images are still good.
"""
from __future__ import annotations

import logging
import os
from typing import Iterable, Sequence

from ..core.errors import FuseDreamError, require
from .paths import within

log = logging.getLogger("FuseDream")

MAX_TREE_ENTRIES = 100_000
"""Entries a model folder may hold (a released diffusers folder holds a few dozen): walking it stays cheap."""


def resolved_inside(path: str, roots: Iterable[str]) -> str | None:
    """The resolved ``path`` when it lies inside one of ``roots``, else None."""
    real = os.path.realpath(path)
    return real if any(within(real, r) for r in roots) else None


def entry_roots(entry: str, roots: Sequence[str] = ()) -> list[str]:
    """Where the files of model ``entry`` may lie: the folder holding it, where the entry itself really is (a folder,
    or the folder of a file), and the caller's ``roots`` (the registered model folders and opted-in roots)."""
    real = os.path.realpath(entry)
    own = real if os.path.isdir(real) else os.path.dirname(real)
    return [os.path.realpath(os.path.dirname(os.path.abspath(entry))), own, *(os.path.realpath(r) for r in roots)]


def _leaves_message(path: str, what: str) -> str:
    return (f"{what} '{path}' is a symbolic link leading outside the allowed folders; the pack reads only files inside "
            f"them. Copy the file in, or (server owner) add the link's target folder to FUSEDREAM_EXTRA_ROOTS.")


def contained_file(path: str, roots: Sequence[str], what: str) -> str:
    """The resolved path of file ``path``, refused when it leads outside ``roots`` (whether or not it exists)."""
    real = resolved_inside(path, roots)
    if real is None:
        raise FuseDreamError(_leaves_message(path, what))
    return real


def require_tree_contained(folder: str, roots: Sequence[str], what: str) -> None:
    """Refuse ``folder`` when any file or sub-folder below it (links followed, each real folder once) leads outside
    ``roots``: run before handing the folder to a library that opens whatever it finds there."""
    seen: set[str] = set()
    pending = [folder]
    count = 0
    while pending:
        current = pending.pop()
        real = resolved_inside(current, roots)
        if real is None:
            raise FuseDreamError(_leaves_message(current, what))
        if real in seen or not os.path.isdir(real):
            continue
        seen.add(real)
        with os.scandir(current) as entries:
            for entry in entries:
                count += 1
                require(count <= MAX_TREE_ENTRIES, f"{what} '{folder}' holds more than {MAX_TREE_ENTRIES:,} files "
                                                   f"and folders; a model folder holds a few dozen.")
                if entry.is_dir() or entry.is_symlink():
                    pending.append(entry.path)
                elif resolved_inside(entry.path, roots) is None:
                    raise FuseDreamError(_leaves_message(entry.path, what))


def contained_members(folder: str, roots: Sequence[str], what: str, *, extensions: tuple[str, ...] = (),
                      folders: bool = False) -> list[str]:
    """The resolved paths of the files (with one of ``extensions``, any when empty) or, with ``folders``, the
    sub-folders directly in ``folder``, sorted by name. A member leading outside ``roots`` is skipped with a logged
    reason."""
    found = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not folders and extensions and not name.lower().endswith(extensions):
            continue
        if not (os.path.isdir(path) if folders else os.path.isfile(path)):
            continue
        real = resolved_inside(path, roots)
        if real is None:
            log.warning("[FuseDream] %s: skipped '%s', a symbolic link leading outside the allowed folders.", what,
                        path)
            continue
        found.append(real)
    return found
