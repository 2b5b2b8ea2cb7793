"""python -m fusedream_ops.core.convert IN.pt [OUT.safetensors] [--trust] — a pickle checkpoint's tensors as safetensors.

A checkpoint that holds only tensors is read with ``weights_only=True`` and converted without further ado. A
training checkpoint that also pickles Python objects (an argparse Namespace …) can only be read by unpickling it,
which runs whatever the file names: the command lists the globals the file would import (read from its opcodes,
nothing is run) and refuses unless ``--trust`` says you vouch for the file. Only the model tensors are kept
(``state_dict`` entry unwrapped, ``module.`` prefix stripped).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from ..safety.pickle_globals import describe, pickle_globals
from .checkpoints import atomic_write, require_checkpoint_file
from .command_exit import exit_code
from .errors import FuseDreamError


def _check_target(source: str, target: str) -> None:
    if not target.lower().endswith(".safetensors"):
        raise FuseDreamError(f"the output '{target}' must end in .safetensors.")
    if os.path.isdir(target):
        raise FuseDreamError(f"the output '{target}' is a folder; give the name of the .safetensors file to write.")
    if os.path.exists(target) and os.path.samefile(source, target):
        raise FuseDreamError(f"the output '{target}' is the input file; give another name.")


def _unpickle(source: str, trust: bool):
    """The checkpoint's contents: safely if possible, by full unpickling only when ``trust`` is given."""
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # refused globals, or not a torch file at all
        safe_error = exc
    found = pickle_globals(source)
    if not trust:
        advice = ("A checkpoint has no reason to import these: do not convert it (--trust would run them)."
                  if found.dangerous else "Convert it only if you trust where it comes from, by adding --trust.")
        raise FuseDreamError(
            f"'{source}' cannot be read safely ({type(safe_error).__name__}): unpickling it would import "
            f"{describe(found)}. Unpickling runs code named by the file; nothing was loaded. {advice}")
    if found.dangerous:
        print(f"[FuseDream] warning: --trust given; unpickling '{source}', which imports "
              f"{', '.join(found.dangerous)}.", file=sys.stderr)
    try:
        return torch.load(source, map_location="cpu", weights_only=False)  # the user vouched for this file
    except Exception as exc:
        raise FuseDreamError(f"'{source}' could not be unpickled: {type(exc).__name__}: {exc}") from None


def convert(source: str, target: str, trust: bool = False) -> int:
    """Write the tensors of ``source`` to ``target``; returns how many."""
    from safetensors.torch import save_file

    require_checkpoint_file(source, "input")
    _check_target(source, target)
    state = _unpickle(source, trust)
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    tensors = ({k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor) and isinstance(k, str)}
               if isinstance(state, dict) else {})
    if not tensors:
        raise FuseDreamError(f"'{source}' holds no named tensors (a state dict) to convert.")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    atomic_write(target, lambda p: save_file(tensors, p))
    return len(tensors)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusedream_ops.core.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a .pt/.pth/.bin/.ckpt checkpoint")
    parser.add_argument("target", nargs="?", help="the .safetensors file to write (default: the input's name with "
                                                  ".safetensors)")
    parser.add_argument("--trust", action="store_true",
                        help="unpickle the file fully even though it imports Python objects: runs code named by the "
                             "file, so only for files from a source you trust")
    args = parser.parse_args(argv)
    target = args.target or os.path.splitext(args.source)[0] + ".safetensors"
    try:
        count = convert(args.source, target, args.trust)
    except FuseDreamError as exc:
        return exit_code(exc)
    print(f"wrote {count} tensors to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
