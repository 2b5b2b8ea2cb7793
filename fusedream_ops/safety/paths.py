"""Names and folders from a workflow resolve only inside the folders the server allows.

A ComfyUI server runs workflows from anyone who can reach it, and a node function can be called with any string,
so the UI's combo lists are no guard. A model name must name something inside one of its registered folders; a folder
input must lie under an allowed root (ComfyUI's input and models folders, plus roots the server's owner opts into).
Paths are normalised and symbolic links resolved (``os.path.realpath``) before the containment check, and the check
comes before any look at the target: an error for a path outside is the same whether it exists or not.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..core.errors import FuseDreamError, require
from ..validation.names import first_control_character, quoted


def within(path: str, root: str) -> bool:
    """``path`` (already resolved) is ``root`` or lies below it, both compared after resolving symbolic links."""
    root = os.path.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _plain_relative(name: str, what: str) -> str:
    """``name`` normalised, refused when absolute or climbing out with ``..``."""
    require(isinstance(name, str) and name.strip() != "", f"{what} must be a file or folder name, got {name!r}.")
    require(first_control_character(name) is None, f"{what} {quoted(name)} holds control characters; a model name "
                                                    f"may hold none.")
    norm = os.path.normpath(name.strip())
    climbs = norm == ".." or norm.startswith(".." + os.sep) or (os.altsep and norm.startswith(".." + os.altsep))
    if os.path.isabs(name.strip()) or os.path.splitdrive(norm)[0] or climbs or norm == ".":
        raise FuseDreamError(f"{what} '{name}' is not a name inside its model folder: absolute paths and '..' are "
                             f"refused. Put the file in the folder and choose it by name.")
    return norm


def resolve_model_name(name: str, folders: list[str], extra_roots: list[str], what: str) -> str | None:
    """The path of model ``name`` in the first of ``folders`` holding it, or None when none does.

    A name whose resolved path leaves its folder (a symbolic link pointing elsewhere) is refused unless the target
    lies under one of ``extra_roots``; the refusal does not depend on whether the target exists.
    """
    norm = _plain_relative(name, what)
    for base in folders:
        candidate = os.path.join(base, norm)
        real = os.path.realpath(candidate)
        if not (within(real, base) or any(within(real, r) for r in extra_roots)):
            raise FuseDreamError(f"{what} '{name}' leads outside its model folder (a symbolic link); the pack reads "
                                 f"models only inside their folders. If you linked it on purpose, add the link's "
                                 f"target folder to FUSEDREAM_EXTRA_ROOTS.")
        if os.path.exists(real):
            return candidate
    return None


@dataclass(frozen=True)
class Root:
    label: str
    """How the root is shown to users (``input``, ``models``, ``extra``)."""
    path: str


@dataclass(frozen=True)
class AllowedFolder:
    path: str
    """The resolved folder to read."""
    shown: str
    """``<root label>/<path relative to the root>``: what messages and saved files keep, never an absolute path."""
    root: str
    """The resolved root it lies in: every file read below it must resolve inside it too
    (:mod:`~fusedream_ops.safety.contained`)."""


def resolve_folder(value: str, roots: list[Root], what: str) -> AllowedFolder:
    """The folder ``value`` names: relative to a root (first match), or absolute inside one of ``roots``."""
    value = value.strip() if isinstance(value, str) else ""
    require(value != "", f"{what} must name a folder, got {quoted(value)}.")
    require(first_control_character(value) is None, f"{what} {quoted(value)} holds control characters; a folder "
                                                     f"name may hold none.")
    candidates = [value] if os.path.isabs(value) else [os.path.join(r.path, value) for r in roots]
    for candidate in candidates:
        real = os.path.realpath(candidate)
        root = next((r for r in roots if within(real, r.path)), None)
        if root is None:
            continue  # outside every root: never looked at
        if os.path.isdir(real):
            root_path = os.path.realpath(root.path)
            rel = os.path.relpath(real, root_path)
            return AllowedFolder(real, root.label if rel == "." else f"{root.label}/{rel}", root_path)
    shown = ", ".join(dict.fromkeys(r.label for r in roots))  # labels only: the server's layout stays private
    raise FuseDreamError(f"{what} '{value}' is not a folder inside the allowed roots ({shown}). Put the images in "
                         f"ComfyUI's input folder (e.g. input/my_images) and give 'my_images'; the server's owner can "
                         f"allow other roots with FUSEDREAM_EXTRA_ROOTS.")
