"""The only door to ComfyUI's services: device, model memory, model folders, progress, interrupt, events.

Nothing is imported from ComfyUI at module level. Inside ComfyUI each function uses the real service; as plain
Python (tests, scripts) it falls back to plain behaviour, so the same node classes run in both worlds.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys

import torch

from ..fusedream_ops.autograd import no_grad_normal_tensors
from ..fusedream_ops.precision import precision_name, resolve_dtype

log = logging.getLogger("FuseDream")


_absent: set[str] = set()


def _comfy(module: str):
    """ComfyUI's ``module`` if it is there; a failed import is remembered (it is asked for every step)."""
    found = sys.modules.get(module)
    if found is not None or module in _absent:
        return found
    try:
        return importlib.import_module(module)
    except ImportError:
        _absent.add(module)
        return None


def in_comfyui() -> bool:
    return _comfy("comfy.model_management") is not None


# ---------------------------------------------------------------- devices and memory
def torch_device() -> torch.device:
    mm = _comfy("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_DTYPE_FLAGS = {
    "text_encoder": (("fp16_text_enc", torch.float16), ("bf16_text_enc", torch.bfloat16),
                     ("fp32_text_enc", torch.float32)),
    "vae": (("fp16_vae", torch.float16), ("bf16_vae", torch.bfloat16), ("fp32_vae", torch.float32)),
}


def model_dtype(role: str) -> torch.dtype | None:
    """ComfyUI's weight dtype for a frozen model of ``role`` on the compute device; None outside ComfyUI.

    ``text_encoder`` (CLIP scorers, Kandinsky encoders) honours ``--fp16/--bf16/--fp32-text-enc``, ``vae``
    (generators, decoders, LPIPS) ``--fp16/--bf16/--fp32-vae``; otherwise what ComfyUI's ``should_use_bf16`` /
    ``should_use_fp16`` allow (both honour ``--force-fp32``/``--force-fp16`` and say no on a CPU), bf16 first for
    text encoders and fp16 first for convolution networks (see ``fusedream_ops/precision.py``), else fp32.
    """
    mm = _comfy("comfy.model_management")
    if mm is None:
        return None
    args = getattr(mm, "args", None)
    for flag, dtype in _DTYPE_FLAGS[role]:
        if getattr(args, flag, False):
            return dtype
    device = mm.get_torch_device()
    preferred = (torch.bfloat16, torch.float16) if role == "text_encoder" else (torch.float16, torch.bfloat16)
    for dtype in preferred:
        if (mm.should_use_bf16 if dtype == torch.bfloat16 else mm.should_use_fp16)(device):
            return dtype
    return torch.float32


def loader_precision(precision: str, role: str) -> str:
    """The concrete precision a loader node uses: ``auto`` resolved with ComfyUI's choice for ``role``
    ('text_encoder' or 'vae', see :func:`model_dtype`) on its compute device, or the device default outside it."""
    return precision_name(resolve_dtype(precision, torch_device(), role, model_dtype(role)))


def intermediate_device() -> torch.device:
    mm = _comfy("comfy.model_management")
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


class _Resident(torch.nn.Module):
    """The module ComfyUI's ModelPatcher manages for one of ours.

    ModelPatcher assigns ``model.device``, a read-only property on transformers/diffusers models, so it gets this
    plain holder instead of the model itself.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model


def load_to_device(*modules: torch.nn.Module) -> torch.device:
    """Put ``modules`` on the compute device together and return that device.

    In ComfyUI each module is handed once to a ModelPatcher and loaded with ``force_full_load=True`` (plain
    nn.Modules cannot be partially loaded), so ComfyUI can evict other models for them and offload them later.
    The move happens outside inference mode: weights moved inside it could not be used for backward.
    """
    mm = _comfy("comfy.model_management")
    with no_grad_normal_tensors():
        if mm is None:
            device = torch_device()
            for module in modules:
                module.to(device)
            return device
        import comfy.model_patcher

        patchers = []
        for module in modules:
            patcher = getattr(module, "_fusedream_patcher", None)
            if patcher is None:
                patcher = comfy.model_patcher.ModelPatcher(
                    _Resident(module), load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
                )
                object.__setattr__(module, "_fusedream_patcher", patcher)  # not a submodule: no cycle
            patchers.append(patcher)
        mm.load_models_gpu(patchers, force_full_load=True)
        return mm.get_torch_device()


# ---------------------------------------------------------------- model folders
def register_model_folder(name: str, extensions) -> None:
    """Add ``models/<name>`` to ComfyUI's folder registry without clobbering the user's extra_model_paths."""
    fp = _comfy("folder_paths")
    if fp is None:
        return
    default = os.path.join(fp.models_dir, name)
    if name in fp.folder_names_and_paths:
        paths, _ = fp.folder_names_and_paths[name]
        paths = list(paths)
        if default not in paths:
            paths.append(default)
    else:
        paths = [default]
    fp.folder_names_and_paths[name] = (paths, set(extensions) if extensions else set())


_fallback_roots: dict[str, list[str]] = {}


def set_fallback_model_root(root: str) -> None:
    """Outside ComfyUI: where ``models/`` lives (default: ``$FUSEDREAM_MODELS`` or ``./models``)."""
    _fallback_roots.clear()
    _fallback_roots["root"] = [root]


def model_folder_paths(name: str) -> list[str]:
    fp = _comfy("folder_paths")
    if fp is not None:
        return list(fp.get_folder_paths(name)) if name in fp.folder_names_and_paths else []
    root = (_fallback_roots.get("root") or [os.environ.get("FUSEDREAM_MODELS", "models")])[0]
    return [os.path.join(root, name)]


def list_model_entries(name: str, want_dirs: bool, extensions=()) -> list[str]:
    """Files (with an allowed extension) or sub-folders of every registered ``models/<name>`` path, sorted."""
    found = set()
    for base in model_folder_paths(name):
        if not os.path.isdir(base):
            continue
        for entry in os.scandir(base):
            if want_dirs and entry.is_dir():
                found.add(entry.name)
            elif not want_dirs and entry.is_file() and entry.name.lower().endswith(tuple(extensions)):
                found.add(entry.name)
    return sorted(found)


EXTRA_ROOTS_ENV = "FUSEDREAM_EXTRA_ROOTS"
"""Opt-in roots (``os.pathsep``-separated folders) where folder inputs may also point, and model links may lead."""


def extra_roots() -> list[str]:
    """The folders the server's owner allowed in ``$FUSEDREAM_EXTRA_ROOTS`` (read at each call)."""
    value = os.environ.get(EXTRA_ROOTS_ENV, "")
    return [os.path.abspath(os.path.expanduser(p)) for p in value.split(os.pathsep) if p.strip()]


def resolve_model_entry(name: str, entry: str) -> str:
    """The full path of ``entry`` in ``models/<name>``, or a clear error naming the folders searched.

    The entry must lie inside one of the registered folders after normalisation and symlink resolution (absolute
    paths, ``..`` and links leading elsewhere are refused), even when a node function is called directly.
    """
    from ..fusedream_ops.checkpoints import WHERE_TO_GET
    from ..fusedream_ops.errors import FuseDreamError
    from ..fusedream_ops.safety.paths import resolve_model_name

    bases = model_folder_paths(name)
    path = resolve_model_name(entry, bases, extra_roots(), f"models/{name} entry")
    if path is None:
        raise FuseDreamError(f"'{entry}' was not found in models/{name} (searched: {', '.join(bases) or 'nothing'}). "
                             f"{WHERE_TO_GET}")
    return path


def _input_directory() -> str:
    fp = _comfy("folder_paths")
    return fp.get_input_directory() if fp is not None else os.path.abspath("input")


def _models_directory() -> str:
    fp = _comfy("folder_paths")
    if fp is not None:
        return fp.models_dir
    return os.path.abspath((_fallback_roots.get("root") or [os.environ.get("FUSEDREAM_MODELS", "models")])[0])


def resolve_input_folder(value: str, what: str):
    """A folder input (reference images …) resolved under ComfyUI's input folder, its models folder or a root of
    ``$FUSEDREAM_EXTRA_ROOTS``: a :class:`~fusedream_ops.safety.paths.AllowedFolder` (path + root-relative name)."""
    from ..fusedream_ops.safety.paths import Root, resolve_folder

    roots = [Root("input", _input_directory()), Root("models", _models_directory())]
    roots += [Root("extra", r) for r in extra_roots()]
    return resolve_folder(value, roots, what)


# ---------------------------------------------------------------- progress, previews, interrupt, events
def throw_if_interrupted() -> None:
    mm = _comfy("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


class ProgressBar:
    """ComfyUI's progress bar with optional JPEG preview; a no-op outside ComfyUI."""

    def __init__(self, total: int, node_id: str | None = None):
        utils = _comfy("comfy.utils")
        self._bar = None
        if utils is not None:
            try:
                self._bar = utils.ProgressBar(total, node_id=node_id)
            except TypeError:  # older ComfyUI without node_id
                self._bar = utils.ProgressBar(total)

    def update(self, value: int, total: int, preview=None) -> None:
        if self._bar is not None:
            self._bar.update_absolute(value, total, None if preview is None else ("JPEG", preview,
                                                                                 preview_side(preview.size)))


PREVIEW_MAX_SIDE = 512


def preview_side(size: tuple[int, int]) -> int:
    """The longest side ComfyUI may scale a live preview to: the image's own, at most 512. ComfyUI scales the preview
    to fit this side with ``ImageOps.contain``, which also enlarges: with 512 a 32 px image arrived as 512 x 512
    and the page labelled it so."""
    return max(1, min(PREVIEW_MAX_SIDE, max(size)))


def prompt_server():
    """ComfyUI's PromptServer instance, or None outside ComfyUI."""
    server = _comfy("server")
    return getattr(getattr(server, "PromptServer", None), "instance", None) if server else None


def current_prompt_id() -> str | None:
    """The id of the prompt being executed (ComfyUI's ``last_prompt_id``), or None outside ComfyUI."""
    prompt_id = getattr(prompt_server(), "last_prompt_id", None)
    return None if prompt_id is None else str(prompt_id)


def send_event(event: str, payload: dict) -> None:
    """Send a websocket event to the client that queued the prompt; nothing happens outside ComfyUI."""
    instance = prompt_server()
    if instance is not None:
        instance.send_sync(event, payload, instance.client_id)


def add_json_route(path: str, answer) -> bool:
    """Serve ``GET path`` with the JSON of ``answer(match_info)`` on ComfyUI's server; False outside ComfyUI or when
    the server has no route table. Must run at import (ComfyUI adds the pack's routes after loading it)."""
    routes = getattr(prompt_server(), "routes", None)
    if routes is None:
        return False
    async def handler(request):
        from aiohttp import web  # ComfyUI's web framework, there whenever a route is asked for

        return web.json_response(answer(dict(request.match_info)))

    routes.get(path)(handler)
    return True


def warn(messages: list[str]) -> None:
    """Log each warning to ComfyUI's console (the ``FuseDream`` logger)."""
    for message in messages:
        log.warning(message)
