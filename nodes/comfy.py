"""The only door to ComfyUI's services: device, model memory, model folders, progress, interrupt, events.

Nothing is imported from ComfyUI at module level. Inside ComfyUI each function uses the real service; as plain
Python (tests, scripts) it falls back to plain behaviour, so the same node classes run in both worlds.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Callable

import torch

from ..fusedream_ops.core.autograd import no_grad_normal_tensors
from ..fusedream_ops.core.precision import resolve_dtype

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


def host_dtype(role: str) -> torch.dtype | None:
    """ComfyUI's weight dtype for a frozen model of ``role`` on its compute device; None outside ComfyUI.

    Encoders (``text_encoder``, ``kandinsky_encoder``) follow ``model_management.text_encoder_dtype()`` (its
    ``--fp16/--bf16/--fp32-text-enc`` flags), convolution networks (``vae``) ``vae_dtype()`` with fp16 tried before
    bf16 (its ``--fp16/--bf16/--fp32-vae`` flags, ``--force-fp32``/``--force-fp16``). A choice the pack cannot compute
    with (fp8, fp16 on a CPU) is replaced by the device default in :func:`resolve_dtype`.
    """
    mm = _comfy("comfy.model_management")
    if mm is None:
        return None
    device = mm.get_torch_device()
    if role == "vae":
        return mm.vae_dtype(device, [torch.float16, torch.bfloat16])
    return mm.text_encoder_dtype(device)


def weight_dtype(precision: str, role: str) -> torch.dtype:
    """The dtype a node hands the ops for a model of ``role``: the precision widget resolved once, with ComfyUI's
    choice for ``auto`` (:func:`host_dtype`) on ComfyUI's compute device, or the device default outside it."""
    return resolve_dtype(precision, torch_device(), role, host_dtype(role))


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


@dataclass
class ClipVisionTower:
    """ComfyUI's CLIP_VISION as an image tower: its state dict (Hugging Face layout), heads, MLP activation, input size
    and normalisation, ``forward(pixels) -> projected features``, its device and ``load()`` (before every batch)."""
    state: dict
    heads: int
    activation: str
    image_size: int
    mean: list
    std: list
    forward: Callable
    device: Callable
    load: Callable


def clip_vision_tower(clip_vision) -> ClipVisionTower:
    """The image tower of a CLIP_VISION from ComfyUI's Load CLIP Vision (``comfy.clip_vision.ClipVisionModel``).

    ``load()`` lets ComfyUI load the model (evicting others if needed) outside inference mode and makes any
    parameter built in inference mode ordinary, so gradients can flow through the tower to the image; the forward
    is the pack's functional one over the current weights (ComfyUI's module adds residuals in place).
    """
    from ..fusedream_ops.core.errors import require
    from ..fusedream_ops.models.clip_vision_tower import activation_name, hf_vit_features, ordinary_parameters

    module = getattr(clip_vision, "model", None)
    require(module is not None and hasattr(clip_vision, "patcher") and hasattr(module, "vision_model"),
            f"clip_vision must be the CLIP_VISION output of Load CLIP Vision, got {type(clip_vision).__name__}.")
    layers = getattr(getattr(module.vision_model, "encoder", None), "layers", None)
    require(bool(layers) and hasattr(layers[0], "self_attn"),
            "clip_vision is not a CLIP ViT (ComfyUI loaded it as another image encoder, e.g. DINOv2).")
    heads, activation = layers[0].self_attn.heads, activation_name(layers[0].mlp.activation)

    def load() -> None:
        mm = _comfy("comfy.model_management")
        with no_grad_normal_tensors():
            if mm is not None:
                mm.load_model_gpu(clip_vision.patcher)
            ordinary_parameters(module)

    return ClipVisionTower(state=module.state_dict(), heads=heads, activation=activation,
                           image_size=clip_vision.image_size, mean=list(clip_vision.image_mean),
                           std=list(clip_vision.image_std),
                           forward=lambda pixels: hf_vit_features(module.state_dict(), pixels, heads, activation),
                           device=lambda: torch.device(clip_vision.load_device), load=load)


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
    from ..fusedream_ops.core.checkpoints import WHERE_TO_GET
    from ..fusedream_ops.core.errors import FuseDreamError
    from ..fusedream_ops.safety.paths import resolve_model_name

    bases = model_folder_paths(name)
    path = resolve_model_name(entry, bases, extra_roots(), f"models/{name} entry")
    if path is None:
        raise FuseDreamError(f"'{entry}' was not found in models/{name} (searched: {', '.join(bases) or 'nothing'}). "
                             f"{WHERE_TO_GET}")
    return path


def model_roots(name: str) -> list[str]:
    """Where the files of a ``models/<name>`` entry may lie (links inside an entry included): the registered
    ``models/<name>`` folders and the roots of ``$FUSEDREAM_EXTRA_ROOTS``. Loaders take it as ``roots``."""
    return model_folder_paths(name) + extra_roots()


def load_model_entry(load, name: str, entry: str, *args):
    """``load(path, *args, roots)``: the pack loader ``load`` on the ``models/<name>`` entry ``entry``, every file
    it opens kept inside :func:`model_roots` (the one path every model-folder loader node takes)."""
    return load(resolve_model_entry(name, entry), *args, model_roots(name))


def folder_roots(folder) -> list[str]:
    """Where the files read below an allowed folder input may lie: its root and the roots of
    ``$FUSEDREAM_EXTRA_ROOTS``."""
    return [folder.root] + extra_roots()


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
