"""CLIP (open_clip) as a frozen, differentiable scorer: one loading path for every checkpoint kind.

A checkpoint is a ``.safetensors``/``.pt``/``.bin`` file (training checkpoints with a ``state_dict`` entry and
``module.`` prefixes included, e.g. CLIPAG's). Its architecture is an open_clip model name, or ``auto``: the
open_clip model config in a sidecar ``<checkpoint stem>.json`` if there is one, else the built-in architecture
whose shapes match the tensors.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Sequence

import torch
import torch.nn.functional as F

from ..core.autograd import no_grad_normal_tensors
from ..core.checkpoints import (atomic_write, atomic_write_text, check_state_dict, read_json_object, read_state_dict,
                                require_checkpoint_file)
from ..core.errors import FuseDreamError, require
from ..core.precision import Precision, cast_frozen
from ..safety.config_sizes import SizeCheck, require_sizes_match
from ..safety.contained import contained_file, entry_roots
from ..safety.meta_budget import build_budget, shapes_of
from ..validation.prompts import require_prompt
from .fast_layers import use_fast_transformer, use_patch_matmul

log = logging.getLogger("FuseDream")

AUTO = "auto"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipScorer:
    """open_clip model + tokenizer + pixel normalisation, weights frozen.

    ``encode_images`` takes images ``[N,3,H,W]`` in 0..1 of any size and is differentiable with respect to
    them; only input gradients are computed because no weight requires grad. Images are cast to the weights'
    dtype on the way in and features are fp32 on the way out. A ViT's patch embedding runs as one matmul
    (:func:`~fusedream_ops.models.fast_layers.use_patch_matmul`), QuickGELU and self-attention in fewer kernels
    (:func:`~fusedream_ops.models.fast_layers.use_fast_transformer`).
    """

    def __init__(self, model, tokenizer, name: str, mean=OPENAI_MEAN, std=OPENAI_STD):
        self.model = model.eval().requires_grad_(False)
        if hasattr(model, "visual"):
            use_patch_matmul(model.visual)
        use_fast_transformer(model)
        self.tokenizer = tokenizer
        self.name = name
        size = model.visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text features ``[T, D]`` (ordinary tensors, usable with autograd later); each text bounded
        by :func:`~fusedream_ops.validation.prompts.require_prompt` before the tokenizer sees it."""
        for i, text in enumerate(texts, start=1):
            require_prompt(text, f"prompt {i}")
        with no_grad_normal_tensors():
            tokens = self.tokenizer(texts).to(self.device)
            return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to the model's input size (antialiased when shrinking) and apply CLIP's normalisation."""
        if tuple(images.shape[-2:]) != self.image_size:
            shrink = images.shape[-2] > self.image_size[0] or images.shape[-1] > self.image_size[1]
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False,
                                   antialias=shrink)
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return ((images - mean) / std).to(self.dtype)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features ``[N, D]`` of images in 0..1."""
        return F.normalize(self.model.encode_image(self.prepare(images)).float(), dim=-1)


SIDECAR_KEYS = ("model_cfg", "preprocess_cfg")
MODEL_KEYS = ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale", "init_logit_bias",
              "nonscalar_logit_scale", "custom_text")
"""What ``open_clip.CLIP``/``CustomTextCLIP`` take from a config (``cast_dtype``/``output_dict`` are run-time
choices, and multimodal towers are not CLIP scorers)."""


def _known_keys() -> dict[str, tuple[str, ...]]:
    """The keys open_clip's config dataclasses define, per section of the sidecar."""
    import dataclasses

    from open_clip.model import CLIPTextCfg, CLIPVisionCfg
    from open_clip.transform import PreprocessCfg

    return {"": SIDECAR_KEYS, "model_cfg": MODEL_KEYS,
            "vision_cfg": tuple(f.name for f in dataclasses.fields(CLIPVisionCfg)),
            "text_cfg": tuple(f.name for f in dataclasses.fields(CLIPTextCfg)),
            "preprocess_cfg": tuple(f.name for f in dataclasses.fields(PreprocessCfg))}


def _require_known(path: str, section: str, data, valid: tuple[str, ...]) -> None:
    where = f"'{section}' of " if section else ""
    require(isinstance(data, dict), f"{where}the CLIP sidecar '{path}' must be a JSON object, not "
                                    f"{type(data).__name__}.")
    unknown = sorted(set(data) - set(valid))
    require(not unknown, f"{where}the CLIP sidecar '{path}' has unknown keys {', '.join(unknown)}; valid keys: "
                         f"{', '.join(valid)}.")


HUB_KEYS = (("text_cfg", "hf_model_name"), ("text_cfg", "hf_tokenizer_name"))


def _require_offline(source: str, model_cfg: dict) -> None:
    """Refuse towers that open_clip would fetch from the model hub: loading never reaches the network."""
    for section, key in HUB_KEYS:
        value = model_cfg.get(section, {}).get(key)
        require(not value,
                f"{source} asks for {section}.{key} = {value!r}, a tower or tokenizer fetched from the Hugging Face "
                f"hub; the pack loads only local open_clip towers (describe the tower with width/heads/layers).")
    vision = model_cfg.get("vision_cfg", {})
    require(not (vision.get("timm_model_name") and vision.get("timm_model_pretrained")),
            f"{source} asks for vision_cfg.timm_model_name = {vision.get('timm_model_name')!r} with "
            f"timm_model_pretrained, which downloads weights; the pack loads only local weights.")


def read_sidecar(checkpoint: str, roots: Sequence[str] = ()) -> dict | None:
    """The open_clip config beside a checkpoint (``model_cfg`` of an open_clip_config.json, or a bare config).

    Only the keys open_clip's config classes define are accepted, and towers from the model hub are refused. The
    sidecar must resolve inside ``roots`` or the checkpoint's own folder.
    """
    path = os.path.splitext(checkpoint)[0] + ".json"
    if not os.path.isfile(path):
        return None
    data = read_json_object(contained_file(path, entry_roots(checkpoint, roots), "CLIP sidecar"), "CLIP sidecar")
    sidecar = data if "model_cfg" in data else {"model_cfg": data}
    known = _known_keys()
    _require_known(path, "", sidecar, known[""])
    _require_known(path, "model_cfg", sidecar["model_cfg"], known["model_cfg"])
    for section in ("vision_cfg", "text_cfg"):
        require(section in sidecar["model_cfg"], f"the CLIP sidecar '{path}' has no '{section}'.")
        _require_known(path, section, sidecar["model_cfg"][section], known[section])
    _require_known(path, "preprocess_cfg", sidecar.get("preprocess_cfg", {}), known["preprocess_cfg"])
    _require_offline(f"the CLIP sidecar '{path}'", sidecar["model_cfg"])
    return sidecar


def sidecar_size_checks(model_cfg: dict) -> list[SizeCheck]:
    """Where an open_clip checkpoint shows each size of a ViT/text-transformer config (the ones that make it big)."""
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    return [SizeCheck("embed_dim", model_cfg.get("embed_dim"), "text_projection", 1),
            SizeCheck("vision_cfg.layers", vision.get("layers"), "visual.transformer.resblocks."),
            SizeCheck("vision_cfg.width", vision.get("width"), "visual.conv1.weight", 0),
            SizeCheck("vision_cfg.patch_size", vision.get("patch_size"), "visual.conv1.weight", -1),
            SizeCheck("text_cfg.layers", text.get("layers"), "transformer.resblocks."),
            SizeCheck("text_cfg.width", text.get("width"), "token_embedding.weight", 1),
            SizeCheck("text_cfg.vocab_size", text.get("vocab_size"), "token_embedding.weight", 0),
            SizeCheck("text_cfg.context_length", text.get("context_length"), "positional_embedding", 0)]


def _count_blocks(state: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def matching_architectures(state: dict[str, torch.Tensor]) -> list[str]:
    """Built-in open_clip ViT architectures whose hyper-parameters fit the tensor shapes (GELU before QuickGELU)."""
    import open_clip

    try:
        conv1 = state["visual.conv1.weight"]
        signature = {
            "embed_dim": state["text_projection"].shape[1],
            "width": conv1.shape[0], "patch_size": conv1.shape[-1],
            "image_size": conv1.shape[-1] * round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5),
            "layers": _count_blocks(state, "visual.transformer.resblocks."),
            "text_width": state["token_embedding.weight"].shape[1],
            "vocab_size": state["token_embedding.weight"].shape[0],
            "context_length": state["positional_embedding"].shape[0],
            "text_layers": _count_blocks(state, "transformer.resblocks."),
        }
    except KeyError:
        return []
    found = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name) or {}
        v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        if "patch_size" not in v or "timm_model_name" in v or "hf_model_name" in t:
            continue
        size = v.get("image_size", 224)
        candidate = {
            "embed_dim": cfg.get("embed_dim"), "width": v.get("width"), "patch_size": v.get("patch_size"),
            "image_size": size[0] if isinstance(size, (list, tuple)) else size, "layers": v.get("layers"),
            "text_width": t.get("width"), "vocab_size": t.get("vocab_size", 49408),
            "context_length": t.get("context_length", 77), "text_layers": t.get("layers"),
        }
        if candidate == signature:
            found.append(name)
    return sorted(found, key=lambda n: ("quickgelu" in n, len(n), n))


def build_clip(arch: str, model_cfg: dict | None = None, meta: bool = False):
    """An open_clip model with random weights (no download): a built-in architecture or a config dict.

    ``meta=True`` builds it on the meta device: every shape, no memory, to compare with a checkpoint first.
    """
    import open_clip

    with no_grad_normal_tensors(), torch.device("meta" if meta else "cpu"):
        if model_cfg is None:
            require(arch in open_clip.list_models(),
                    f"CLIP architecture '{arch}' is not an open_clip model; valid: {AUTO}, "
                    f"{', '.join(open_clip.list_models()[:12])}, …")
            _require_offline(f"open_clip architecture '{arch}'", open_clip.get_model_config(arch) or {})
            return open_clip.create_model(arch, pretrained=None, device="meta" if meta else "cpu")
        cfg = dict(model_cfg)
        custom = cfg.pop("custom_text", False)
        try:
            return (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**cfg)
        except FuseDreamError:
            raise
        except Exception as exc:  # values open_clip cannot build from (wrong types, impossible sizes)
            raise FuseDreamError(f"the CLIP config '{arch}' does not describe a buildable model: "
                                 f"{type(exc).__name__}: {exc}") from None


def _tokenizer(arch: str, model_cfg: dict | None):
    import open_clip

    if model_cfg is None:
        return open_clip.get_tokenizer(arch)
    context = model_cfg.get("text_cfg", {}).get("context_length", 77)
    return open_clip.tokenizer.SimpleTokenizer(context_length=context)


def load_clip(arch: str, checkpoint: str, precision: Precision = "fp32", roots: Sequence[str] = ()) -> ClipScorer:
    """Load an open_clip checkpoint strictly into ``arch`` (or the architecture ``auto`` finds), its weights then
    cast to ``precision`` (see :mod:`~fusedream_ops.core.precision`).

    Every mismatch is an error that also names the architectures whose shapes do fit the checkpoint. The checkpoint
    and its sidecar must resolve inside ``roots`` or the checkpoint's own folder.
    """
    require_checkpoint_file(checkpoint, "CLIP checkpoint")
    state = read_state_dict(contained_file(checkpoint, entry_roots(checkpoint, roots), "CLIP checkpoint"))
    sidecar = read_sidecar(checkpoint, roots)
    model_cfg, preprocess = None, {}
    if arch == AUTO:
        if sidecar is not None:
            model_cfg, preprocess = sidecar["model_cfg"], sidecar.get("preprocess_cfg", {})
            name = os.path.basename(os.path.splitext(checkpoint)[0])
        else:
            matches = matching_architectures(state)
            require(bool(matches),
                    f"CLIP checkpoint '{checkpoint}': 'auto' found no sidecar .json and no built-in open_clip "
                    f"architecture with these shapes; choose the architecture explicitly.")
            name = matches[0]
            if len(matches) > 1:
                log.info("FuseDream: %s fits %s; using %s (choose a -quickgelu variant for OpenAI-trained weights).",
                         checkpoint, ", ".join(matches), name)
    else:
        name = arch
    if model_cfg is not None:
        source = f"the CLIP sidecar '{os.path.splitext(checkpoint)[0]}.json'"
        require_sizes_match(source, shapes_of(state), sidecar_size_checks(model_cfg))
        with build_budget(shapes_of(state), source, model_cfg):
            shapes = build_clip(name, model_cfg, meta=True)
    else:
        shapes = build_clip(name, model_cfg, meta=True)  # checked against the checkpoint before anything is allocated
    if "logit_bias" not in state and "logit_bias" in shapes.state_dict():
        state["logit_bias"] = torch.zeros(shapes.state_dict()["logit_bias"].shape)

    def hint() -> str:
        fits = matching_architectures(state)
        if sidecar is not None and arch != AUTO:
            return "A .json config sits beside the checkpoint: choose architecture 'auto' to use it."
        return (f"Architectures with these shapes: {', '.join(fits)}." if fits
                else "No built-in open_clip architecture has these shapes.")

    check_state_dict(shapes, state, f"CLIP checkpoint '{checkpoint}' for architecture '{name}'", hint=hint)
    model = build_clip(name, model_cfg)
    with no_grad_normal_tensors():
        model.load_state_dict(state, strict=True)
        cast_frozen(model, precision, "text_encoder")
    mean = preprocess.get("mean") or getattr(model.visual, "image_mean", None) or OPENAI_MEAN
    std = preprocess.get("std") or getattr(model.visual, "image_std", None) or OPENAI_STD
    log.info("FuseDream: loaded %s as open_clip architecture '%s'.", checkpoint, name)
    with no_grad_normal_tensors():  # mean/std must not be inference tensors: they meet autograd in prepare()
        return ClipScorer(model, _tokenizer(name, model_cfg), name, mean, std)


def save_clip(model, path: str, model_cfg: dict | None = None) -> str:
    """Write ``model``'s weights (``.safetensors`` or ``.pt``) and, given ``model_cfg``, the sidecar json."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        atomic_write(path, lambda p: save_file(state, p))
    else:
        atomic_write(path, lambda p: torch.save(state, p))
    if model_cfg is not None:
        atomic_write_text(os.path.splitext(path)[0] + ".json", json.dumps({"model_cfg": model_cfg}, indent=2))
    return path

