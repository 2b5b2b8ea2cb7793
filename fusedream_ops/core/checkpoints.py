"""Reading checkpoints in the formats users have, comparing them with a model strictly, writing files atomically."""
from __future__ import annotations

import os
import tempfile
from typing import Callable

import torch

from .errors import FuseDreamError

MAX_LISTED = 8


WHERE_TO_GET = ("The README's table 'Which weight file goes where' says where to get each file; the command line "
                "looks under --models (default: $FUSEDREAM_MODELS or ./models).")


def require_checkpoint_file(path: str, what: str = "checkpoint") -> None:
    """A clear error unless ``path`` is a non-empty file: missing (and where to get it), a folder, or empty."""
    if os.path.isdir(path):
        raise FuseDreamError(f"{what} '{path}' is a folder, not a file; give the checkpoint file itself.")
    if not os.path.exists(path):
        raise FuseDreamError(f"{what} '{path}' does not exist. {WHERE_TO_GET}")
    if os.path.getsize(path) == 0:
        raise FuseDreamError(f"{what} '{path}' is empty (0 bytes): the download or copy failed; fetch it again.")


def refused_pickle_advice(path: str) -> str:
    """What to do about a pickle the safe loader refused, judged by the globals it would import (never run)."""
    from ..safety.pickle_globals import describe, pickle_globals

    try:
        found = pickle_globals(path)
    except FuseDreamError:
        found = None
    if found is None or not found.names:
        return "It is not a complete PyTorch checkpoint: re-download it."
    if found.dangerous:
        return (f"It imports {describe(found)}. Loading it would run them; do not load or convert it, get the "
                f"weights from a trusted source (a .safetensors file holds no code).")
    if found.unknown:
        return (f"It imports {describe(found)}. Ask its source for a .safetensors file; the pack does not load "
                f"pickled objects it cannot vouch for.")
    return (f"It pickles {describe(found)} besides the tensors. If you trust where the file comes from, convert it "
            f"once: python -m fusedream_ops.core.convert '{path}' '{os.path.splitext(path)[0]}.safetensors' --trust")


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a pickle loaded with ``weights_only=True``.

    Training checkpoints are unwrapped: a ``state_dict`` (or ``model``) entry is used, and a ``module.``
    prefix (DataParallel/DDP) is stripped.
    """
    require_checkpoint_file(path)
    safetensors = path.lower().endswith((".safetensors", ".sft"))
    try:
        if safetensors:
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FuseDreamError:
        raise
    except Exception as exc:  # truncated or foreign file: say which file and why
        advice = ("Is the file complete (re-download it) and a safetensors checkpoint?" if safetensors
                  else refused_pickle_advice(path))
        raise FuseDreamError(f"Could not read checkpoint '{path}': {type(exc).__name__}: {_first_line(exc)}. "
                             f"{advice}") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FuseDreamError(f"Checkpoint '{path}' does not hold a state dict of tensors.")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _first_line(exc: Exception) -> str:
    """The cause in one line. torch's refusal of a pickle runs to a page that recommends ``weights_only=False``,
    the one thing not to do with a stranger's file, so it is replaced."""
    import pickle

    if isinstance(exc, pickle.UnpicklingError):
        return "the safe (weights_only) loader refused it"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"


MAX_JSON_BYTES = 16 * 2**20
"""Largest config read: a model's config.json or weights index is a few kilobytes to a megabyte."""


def read_json_object(path: str, what: str) -> dict:
    """A JSON object from ``path``, or an error naming the file: too large, invalid JSON, or not an object."""
    import json

    try:
        size = os.path.getsize(path)
        if size > MAX_JSON_BYTES:
            raise FuseDreamError(f"{what} '{path}' is {size / 2**20:.0f} MiB; a config is at most "
                                 f"{MAX_JSON_BYTES // 2**20} MiB.")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FuseDreamError(f"{what} '{path}' is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise FuseDreamError(f"{what} '{path}' must hold a JSON object {{...}}, not a {type(data).__name__}.")
    return data


def _listed(keys) -> str:
    keys = sorted(keys)
    more = f" … and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


def state_dict_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """A description of missing, unexpected and mis-shaped tensors, or None when ``state`` fits ``model``."""
    expected = model.state_dict()
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
              for k in sorted(expected.keys() & state.keys()) if state[k].shape != expected[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_listed(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_listed(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} with another shape, checkpoint vs model ({_listed(shapes)})")
    return "; ".join(parts) or None


def check_state_dict(model: torch.nn.Module, state: dict, what: str, hint: Callable[[], str] | None = None) -> None:
    """Raise a :class:`FuseDreamError` naming every mismatch between ``state`` and ``model``."""
    problem = state_dict_mismatch(model, state)
    if problem is not None:
        extra = f" {hint()}" if hint is not None else ""
        raise FuseDreamError(f"{what} does not match the architecture: {problem}.{extra}")


def atomic_write(path: str, write: Callable[[str], object]) -> None:
    """Run ``write(tmp_path)`` then rename onto ``path``: a crash never leaves a half-written file."""
    if os.path.isdir(path):
        raise FuseDreamError(f"'{path}' is a folder; give the name of the file to write.")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    except OSError as exc:
        raise FuseDreamError(f"cannot write '{path}': {exc.strerror or exc} (in '{folder}').") from None
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a saved file gets the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def save_safetensors(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None = None) -> None:
    """Write a ``.safetensors`` file atomically, byte for byte the same for the same tensors and metadata.

    The ``safetensors`` writer keeps ``__metadata__`` in a hash map whose order changes from call to call, so a file
    with two or more metadata entries would differ on every rebuild; here the entries are written sorted.
    """
    import json
    import struct

    from safetensors.torch import save

    data = save(tensors, metadata=metadata)
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8").ljust(length, b" ")
    if len(text) != length:
        raise FuseDreamError(f"could not write '{path}' deterministically: the header changed size.")

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data[:8])
            f.write(text)
            f.write(data[8 + length:])

    atomic_write(path, write)
