"""Gradients inside ComfyUI.

ComfyUI runs every node under ``torch.inference_mode()``; tensors created there can never be saved for
backward, even later inside ``inference_mode(False)``. So weights are loaded, text is encoded and inputs are
cloned inside :func:`grad_enabled`.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def grad_enabled():
    """Leave inference mode and enable autograd for the duration of the block."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextmanager
def no_grad_normal_tensors():
    """No autograd, but tensors made here are ordinary (not inference) tensors and can meet autograd later."""
    with torch.inference_mode(False), torch.no_grad():
        yield


def ordinary(t: torch.Tensor) -> torch.Tensor:
    """An ordinary copy of ``t`` if it is an inference tensor (call inside :func:`grad_enabled`)."""
    return t.clone() if t.is_inference() else t
