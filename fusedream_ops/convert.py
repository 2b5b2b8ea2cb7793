"""python -m fusedream_ops.convert IN.pt OUT.safetensors — turn a trusted pickle checkpoint into safetensors.

The pack reads pickles with ``weights_only=True``, which refuses training checkpoints that pickle Python objects
besides tensors (e.g. an argparse Namespace). This one-time conversion unpickles such a file fully, so run it only on
files you trust; it keeps the model tensors (``state_dict`` entry unwrapped, ``module.`` prefix stripped).
"""
from __future__ import annotations

import argparse
import sys

import torch

from .checkpoints import atomic_write


def convert(source: str, target: str) -> int:
    """Write the tensors of ``source`` to ``target``; returns how many."""
    from safetensors.torch import save_file

    state = torch.load(source, map_location="cpu", weights_only=False)  # the user vouched for this file
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    tensors = {k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    atomic_write(target, lambda p: save_file(tensors, p))
    return len(tensors)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusedream_ops.convert", description=__doc__)
    parser.add_argument("source", help="a .pt/.pth/.bin checkpoint you trust")
    parser.add_argument("target", help="the .safetensors file to write")
    args = parser.parse_args(argv)
    if not args.target.endswith(".safetensors"):
        print("[FuseDream] target must end in .safetensors", file=sys.stderr)
        return 2
    print(f"wrote {convert(args.source, args.target)} tensors to {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
