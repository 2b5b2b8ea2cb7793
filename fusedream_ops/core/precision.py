"""Weight precision of the frozen models (generator, CLIP, LPIPS, Kandinsky): ``auto`` / ``fp32`` / ``fp16`` / ``bf16``.

Only the frozen weights and the activations through them change dtype: every model casts its input to its own
dtype and returns fp32, so the optimised latents, their gradients and Adam's state stay fp32.

``auto`` depends on the device and on the model's role: ``text_encoder`` (CLIP scorers: transformers,
matmul-bound), ``kandinsky_encoder`` (Kandinsky's CLIP towers) or ``vae`` (BigGAN, LPIPS, Kandinsky's decoder:
convolution networks). :func:`resolve_dtype` is the one place a precision becomes a dtype; inside ComfyUI the node
layer passes ComfyUI's own choice as ``host_choice`` (``text_encoder_dtype()`` for the encoders, ``vae_dtype()`` for
the convolution networks, see ``nodes/comfy.py``) and hands the ops the resulting ``torch.dtype``. Outside it:

- CUDA: text encoders bf16 where the GPU supports it (``torch.cuda.is_bf16_supported()``), else fp16 — the official
  FuseDream code runs CLIP in fp16 (OpenAI's ``clip.load`` converts it on CUDA); convolution networks fp16
  (tensor cores on every CUDA GPU; fp16's 10-bit mantissa keeps BigGAN's conditional batch-norm gains
  ``1 + γ(y)``, which bf16's 7 bits round: gradient cosine to fp32 ≥ 0.9998 in fp16, 0.9986–0.9995 in bf16 on the
  tiny test models);
- CPU: text encoders bf16 where the CPU has bf16 dot-product instructions (x86 ``avx512_bf16``/``amx_bf16``), else
  fp32; Kandinsky's encoders fp32 (OVI's optimisation and the Ledoit–Wolf reference statistics are validated in fp32
  only); convolution networks fp32. Measured on a 2-core AVX512-BF16 CPU (torch 2.14, 2026-11-28): a 2048² matmul
  runs at 411 GFLOP/s in bf16 against 192 in fp32 and ViT-B-32's forward+backward on 50 images is 1.3× faster in
  bf16, but BigGAN-deep-256's forward+backward is 1.6× slower in bf16 (oneDNN's bf16 convolutions);
- MPS: fp16; any other device: fp32.
"""
from __future__ import annotations

import functools
from typing import Union

import torch

from .errors import require

AUTO = "auto"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISIONS = (AUTO, *DTYPES)
ROLES = ("text_encoder", "kandinsky_encoder", "vae")
Precision = Union[str, torch.dtype]
"""A precision name (``auto``/``fp32``/``fp16``/``bf16``) or a dtype already resolved (what nodes pass)."""
PRECISION_TOOLTIP = ("Weight precision of this model. auto: ComfyUI's choice for the device inside ComfyUI "
                     "(honours --force-fp32 and the --fp16/--bf16/--fp32 flags); outside it fp16/bf16 on GPUs, bf16 "
                     "for CLIP on CPUs with bf16 instructions, else fp32. The optimised latents and Adam's state stay "
                     "fp32 whatever is chosen.")


def require_precision(precision: str) -> None:
    require(precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 dot products (Linux ``/proc/cpuinfo`` flags ``avx512_bf16``/``amx_bf16``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def device_default_dtype(device, role: str) -> torch.dtype:
    """The ``auto`` precision of a model of ``role`` on ``device`` outside ComfyUI (see the module docstring)."""
    require(role in ROLES, f"role must be one of {', '.join(ROLES)}, got {role!r}.")
    device = torch.device(device)
    if device.type == "cuda":
        if role == "vae":
            return torch.float16
        with torch.cuda.device(device):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if role == "text_encoder" and cpu_has_fast_bf16() else torch.float32
    if device.type == "mps":
        return torch.float16
    return torch.float32


def resolve_dtype(precision: Precision, device, role: str, host_choice: torch.dtype | None = None) -> torch.dtype:
    """The dtype for ``precision`` on ``device``; for ``auto``, ``host_choice`` (ComfyUI's) when given; a dtype is
    returned as it is (it was resolved already).

    A host choice the pack cannot compute with (fp8 storage types, fp16 on a CPU) falls back to the device default.
    """
    if isinstance(precision, torch.dtype):
        require(precision in DTYPES.values(), f"precision must be one of {', '.join(PRECISIONS)}, got {precision}.")
        return precision
    require_precision(precision)
    require(role in ROLES, f"role must be one of {', '.join(ROLES)}, got {role!r}.")
    if precision != AUTO:
        return DTYPES[precision]
    usable = (torch.float32, torch.bfloat16) if torch.device(device).type == "cpu" else tuple(DTYPES.values())
    if host_choice in usable:
        return host_choice
    return device_default_dtype(device, role)


def precision_name(dtype: torch.dtype) -> str:
    """``fp32``/``fp16``/``bf16`` of a dtype."""
    return next(name for name, d in DTYPES.items() if d == dtype)


def compute_device() -> torch.device:
    """Where a script's models run when nothing else says: the first CUDA GPU if there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cast_frozen(module: torch.nn.Module, precision: Precision, role: str, device=None) -> torch.nn.Module:
    """``module`` with its floating-point weights and buffers in ``precision`` (``auto``: the default for ``role``
    on ``device``, or on :func:`compute_device`). Called by the loaders after the strict load."""
    dtype = resolve_dtype(precision, device if device is not None else compute_device(), role)
    return module if module_dtype(module) == dtype else module.to(dtype)


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype of a module's floating-point weights (fp32 for a module without any)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
