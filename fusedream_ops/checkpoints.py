"""Reading checkpoints in the formats users have, comparing them with a model strictly, writing files atomically."""
from __future__ import annotations

import os
import tempfile
from typing import Callable

import torch

from .errors import FuseDreamError

MAX_LISTED = 8


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a pickle loaded with ``weights_only=True``.

    Training checkpoints are unwrapped: a ``state_dict`` (or ``model``) entry is used, and a ``module.``
    prefix (DataParallel/DDP) is stripped.
    """
    try:
        if path.endswith((".safetensors", ".sft")):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FuseDreamError:
        raise
    except Exception as exc:  # truncated or foreign file: say which file and why
        convert = ("" if path.endswith((".safetensors", ".sft")) else
                   f" If it is a complete training checkpoint you trust that pickles more than tensors, convert it "
                   f"once: python -m fusedream_ops.convert '{path}' '{os.path.splitext(path)[0]}.safetensors'.")
        raise FuseDreamError(f"Could not read checkpoint '{path}': {type(exc).__name__}: {exc}. "
                             f"Is the file complete (re-download it) and a PyTorch/safetensors checkpoint?"
                             f"{convert}") from None
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
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
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
