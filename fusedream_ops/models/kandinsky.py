"""Kandinsky 2.2 components from local diffusers-layout folders: the prior's CLIP encoders and the decoder.

Prior folder (``kandinsky-community/kandinsky-2-2-prior``): ``image_encoder/`` (CLIPVisionModelWithProjection,
ViT-bigG/14, 1280-d projection), ``text_encoder/`` (CLIPTextModelWithProjection), ``tokenizer/``, optionally
``prior/`` + ``scheduler/`` (the trained diffusion prior) and ``image_processor/``. Decoder folder
(``kandinsky-community/kandinsky-2-2-decoder``): ``unet/``, ``movq/``, ``scheduler/``.

Everything loads with ``local_files_only=True`` (never the hub), frozen and in eval mode, and a checkpoint whose keys
do not match its config is an error naming the keys, not a silently random layer.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..core.autograd import no_grad_normal_tensors
from ..core.checkpoints import (WHERE_TO_GET, check_state_dict, read_json_object, read_state_dict,
                                require_checkpoint_file)
from ..core.errors import FuseDreamError, require
from ..safety.config_sizes import SizeCheck, require_sizes_match
from ..safety.contained import contained_file, entry_roots, require_tree_contained
from ..safety.meta_budget import build_budget, shapes_of
from ..safety.scheduler_config import require_scheduler_config
from ..validation.prompts import require_prompt

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "diffusion_pytorch_model.safetensors",
                "diffusion_pytorch_model.bin", "model.fp16.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "model.safetensors.index.json", "diffusion_pytorch_model.safetensors.index.json")
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DECODER_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "UnCLIPScheduler")


def _transformers_dtype_kw() -> str:
    """transformers >= 4.56 takes ``dtype=`` (5.x deprecates ``torch_dtype=``); older releases only ``torch_dtype=``."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


# ---------------------------------------------------------------- folder checks and strict loading
def _component(folder: str, sub: str, what: str, files: tuple[str, ...]) -> str:
    path = os.path.join(folder, sub)
    require(os.path.isdir(folder), f"Kandinsky folder '{folder}' does not exist. {WHERE_TO_GET}")
    require(os.path.isdir(path),
            f"'{folder}' has no '{sub}/' subfolder ({what}). Expected the diffusers layout of "
            f"kandinsky-community/kandinsky-2-2-{'decoder' if sub in ('unet', 'movq') else 'prior'}: "
            f"{', '.join(s + '/' for s in _EXPECTED[sub])}.")
    for name in files:
        require(os.path.isfile(os.path.join(path, name)), f"'{path}' has no {name} ({what}).")
    if files == ("config.json",):
        require(any(os.path.isfile(os.path.join(path, w)) for w in WEIGHT_FILES),
                f"'{path}' has no weights file (one of {', '.join(WEIGHT_FILES[:4])}).")
    return path


_PRIOR_PARTS = ("image_encoder", "text_encoder", "tokenizer")
_DECODER_PARTS = ("unet", "movq", "scheduler")
_EXPECTED = {**{p: _PRIOR_PARTS for p in _PRIOR_PARTS + ("prior", "image_processor")},
             **{p: _DECODER_PARTS for p in ("unet", "movq")}, "scheduler": ("scheduler",)}


def _check_loading_info(path: str, info: dict) -> None:
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = [k if isinstance(k, str) else k[0] for k in (info.get(kind) or [])]
        if keys:
            shown = ", ".join(sorted(keys)[:8]) + (" ..." if len(keys) > 8 else "")
            problems.append(f"{len(keys)} {kind.replace('_', ' ')} ({shown})")
    require(not problems, f"Checkpoint in '{path}' does not match its config.json: {'; '.join(problems)}. "
                          "The file is truncated or belongs to another model.")


def _fp16_variant_only(path: str) -> bool:
    """The folder holds only ``*.fp16.*`` weights (a download of just the fp16 variant)."""
    files = os.listdir(path)
    plain = any(f in files for f in WEIGHT_FILES if ".fp16." not in f)
    return not plain and any(".fp16." in f for f in files)


def _weights_files(path: str) -> list[str]:
    """The weight files ``from_pretrained`` would read in ``path`` (the shards of an index, or the one file)."""
    fp16_only = _fp16_variant_only(path)
    for name in WEIGHT_FILES:
        if (".fp16." in name) != fp16_only or not os.path.isfile(os.path.join(path, name)):
            continue
        if name.endswith(".index.json"):
            index = read_json_object(os.path.join(path, name), "weights index")
            shards = index.get("weight_map")
            require(isinstance(shards, dict) and shards and all(isinstance(v, str) for v in shards.values()),
                    f"'{os.path.join(path, name)}' has no 'weight_map' of tensor names to shard files.")
            return [os.path.join(path, s) for s in sorted(set(shards.values()))]
        return [os.path.join(path, name)]
    return []


def _checkpoint_shapes(files: list[str]) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of weight files, read from safetensors headers (or a weights-only pickle) without the data."""
    shapes = {}
    for file in files:
        require_checkpoint_file(file, "weights file")
        if file.endswith(".safetensors"):
            from safetensors import safe_open

            try:
                with safe_open(file, framework="pt") as f:
                    shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
            except Exception as exc:  # safetensors raises its own error type for a broken header
                raise FuseDreamError(f"Could not read weights file '{file}': {type(exc).__name__}: {exc}. Is the "
                                     f"file complete (re-download it)?") from None
        else:
            shapes.update({k: tuple(v.shape) for k, v in _mapped_pickle(file).items()})
    return shapes


def _mapped_pickle(file: str) -> dict:
    """A weights-only pickle memory-mapped (its tensors are not read); a legacy or refused file goes through
    :func:`read_state_dict`, which names what is wrong with it."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint, or a refused one: let the strict reader explain
        return read_state_dict(file)
    if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
        return state
    return read_state_dict(file)


def clip_tower_size_checks(config) -> list[SizeCheck]:
    """Where a transformers CLIP vision or text tower's checkpoint shows each size of its config."""
    vision = hasattr(config, "patch_size")
    root = "vision_model" if vision else "text_model"
    checks = [SizeCheck("num_hidden_layers", config.num_hidden_layers, f"{root}.encoder.layers."),
              SizeCheck("hidden_size", config.hidden_size, f"{root}.embeddings.position_embedding.weight", 1),
              SizeCheck("intermediate_size", config.intermediate_size, f"{root}.encoder.layers.0.mlp.fc1.weight", 0),
              SizeCheck("projection_dim", config.projection_dim,
                        "visual_projection.weight" if vision else "text_projection.weight", 0)]
    if vision:
        size, patch = config.image_size, config.patch_size
        positions = (size // patch) ** 2 + 1 if all(isinstance(v, int) and v > 0 for v in (size, patch)) else None
        checks += [SizeCheck("patch_size", patch, f"{root}.embeddings.patch_embedding.weight", -1),
                   SizeCheck("image_size (as (image_size/patch_size)²+1 positions)", positions,
                             f"{root}.embeddings.position_embedding.weight", 0)]
    else:
        checks += [SizeCheck("vocab_size", config.vocab_size, f"{root}.embeddings.token_embedding.weight", 0),
                   SizeCheck("max_position_embeddings", config.max_position_embeddings,
                             f"{root}.embeddings.position_embedding.weight", 0)]
    return checks


def _meta_model(cls, path: str, shapes: dict[str, tuple[int, ...]]):
    """``cls`` built from ``path/config.json`` on the meta device (every shape, no memory): its sizes are compared
    with the weights' ``shapes`` first where the checkpoint shows them (CLIP towers), and the build runs under a
    budget taken from them (:func:`~fusedream_ops.safety.meta_budget.build_budget`)."""
    import transformers

    source = f"'{path}/config.json'"
    config = read_json_object(os.path.join(path, "config.json"), "config")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if issubclass(cls, transformers.PreTrainedModel):  # from_pretrained picks a sub-config (vision_config …)
                config = cls.config_class.from_pretrained(path, local_files_only=True)
                if issubclass(cls, (transformers.CLIPVisionModelWithProjection,
                                    transformers.CLIPTextModelWithProjection)):
                    require_sizes_match(source, shapes, clip_tower_size_checks(config))
                with build_budget(shapes, source, config), torch.device("meta"):
                    return cls(config)
            with build_budget(shapes, source, config), torch.device("meta"):
                return cls.from_config(config)
    except FuseDreamError:
        raise
    except Exception as exc:  # a config the class cannot build from: wrong types, unknown block names …
        raise FuseDreamError(f"{source} does not describe a {cls.__name__}: {type(exc).__name__}: {exc}") from None


def _require_config_fits_weights(cls, path: str) -> None:
    """Compare the shapes ``config.json`` implies with the weight files' headers BEFORE anything is allocated, so a
    config that describes a huge model fails in milliseconds instead of allocating it."""
    files = _weights_files(path)
    if not files:
        return
    found = _checkpoint_shapes(files)
    expected = {k: tuple(v.shape) for k, v in _meta_model(cls, path, found).state_dict().items()}
    wrong = [f"{k} {found[k]} vs {expected[k]}" for k in sorted(expected.keys() & found.keys())
             if found[k] != expected[k]]
    require(not wrong, f"Checkpoint in '{path}' does not match its config.json: {len(wrong)} tensors with another "
                       f"shape, weights vs config ({', '.join(wrong[:8])}{' ...' if len(wrong) > 8 else ''}).")
    size = sum(math.prod(s) for s in expected.values())
    held = sum(math.prod(s) for s in found.values())
    missing = sorted(expected.keys() - found.keys())
    require(size <= 2 * held + MAX_UNBACKED_PARAMETERS,
            f"'{path}/config.json' describes a model of {size:,} values but the weights hold {held:,}; missing keys "
            f"({', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}). The config belongs to another model.")


MAX_UNBACKED_PARAMETERS = 2 ** 20
"""Values a config may describe beyond twice what its weights hold (buffers, renamed keys) before it is refused."""


def _load_pretrained(cls, path: str, dtype: torch.dtype, dtype_kw: str):
    _require_config_fits_weights(cls, path)
    variant = {"variant": "fp16"} if _fp16_variant_only(path) else {}
    try:
        with no_grad_normal_tensors():
            model, info = cls.from_pretrained(path, local_files_only=True, output_loading_info=True,
                                              **{dtype_kw: dtype}, **variant)
    except FuseDreamError:
        raise
    except Exception as exc:  # transformers/diffusers/safetensors raise many types for a broken folder
        raise FuseDreamError(f"Could not load {cls.__name__} from '{path}': {type(exc).__name__}: {exc}") from None
    _check_loading_info(path, info)
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------- the prior's encoders
@dataclass
class TextEmbedding:
    """Projected text embeddings and what a trained prior also needs (custom type ``KANDINSKY22_TEXT_EMBEDS``)."""

    prompts: list[str]
    text_embeds: torch.Tensor
    """``[B,D]`` projected (not normalized) text embeddings: the OVI target and the TextEmb prior's output."""
    hidden_states: torch.Tensor
    """``[B,L,H]`` last hidden states of the text tower."""
    mask: torch.Tensor
    """``[B,L]`` bool attention mask of the padded tokens."""


@dataclass
class KandinskyEncoders:
    """The prior repository's CLIP towers (custom type ``KANDINSKY22_ENCODERS``)."""

    image_encoder: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    folder: str
    """The prior folder they came from; empty when loaded from single files."""
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD

    @property
    def embed_dim(self) -> int:
        return int(self.image_encoder.config.projection_dim)

    @property
    def image_size(self) -> int:
        return int(self.image_encoder.config.image_size)

    def encode_text(self, prompts: list[str]) -> TextEmbedding:
        """Tokenize (padded to 77) and encode exactly as KandinskyV22PriorPipeline._encode_prompt does; each prompt
        bounded by :func:`~fusedream_ops.validation.prompts.require_prompt` before the tokenizer sees it."""
        for i, prompt in enumerate(prompts, start=1):
            require_prompt(prompt, f"prompt {i}")
        device = next(self.text_encoder.parameters()).device
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        with no_grad_normal_tensors():
            out = self.text_encoder(tokens.input_ids.to(device))
        return TextEmbedding(list(prompts), out.text_embeds.float(), out.last_hidden_state.float(),
                             tokens.attention_mask.bool().to(device))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``[N,3,H,W]`` in 0..1 -> CLIP input: shortest side to ``image_size`` (bicubic), center crop, normalize."""
        size = self.image_size
        h, w = x.shape[-2:]
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[..., top:top + size, left:left + size]
        mean = torch.tensor(self.image_mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_images(self, images, batch_size: int = 16) -> torch.Tensor:
        """Unnormalized projected image embeddings ``[N,D]`` (float32) of images in 0..1.

        ``images`` is one ``[N,3,H,W]`` batch or a list of ``[1,3,H,W]`` images of any sizes (each is resized and
        cropped on its own, then they go through the tower ``batch_size`` at a time).
        """
        param = next(self.image_encoder.parameters())
        chunks = list(images.split(1)) if isinstance(images, torch.Tensor) else list(images)
        require(len(chunks) > 0, "no images to encode.")
        outs = []
        with no_grad_normal_tensors():
            for start in range(0, len(chunks), batch_size):
                pixels = torch.cat([self.preprocess(c.to(param.device, torch.float32))
                                    for c in chunks[start:start + batch_size]])
                outs.append(self.image_encoder(pixel_values=pixels.to(param.dtype)).image_embeds.float())
        return torch.cat(outs)

    def zero_image_embed(self) -> torch.Tensor:
        """``[1,D]``: the encoder applied to an all-zero *normalized* image, diffusers' ``get_zero_embed``."""
        param = next(self.image_encoder.parameters())
        zeros = torch.zeros(1, 3, self.image_size, self.image_size, device=param.device, dtype=param.dtype)
        with no_grad_normal_tensors():
            return self.image_encoder(pixel_values=zeros).image_embeds.float()


def _image_processor_stats(folder: str):
    path = os.path.join(folder, "image_processor", "preprocessor_config.json")
    if not os.path.isfile(path):
        return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    cfg = read_json_object(path, "image processor config")
    return tuple(cfg.get("image_mean", OPENAI_CLIP_MEAN)), tuple(cfg.get("image_std", OPENAI_CLIP_STD))


def load_encoders(folder: str, dtype: torch.dtype = torch.float32, roots: Sequence[str] = ()) -> KandinskyEncoders:
    """``image_encoder/`` + ``text_encoder/`` + ``tokenizer/`` of a Kandinsky 2.2 prior folder, every file of which
    must resolve inside ``roots`` or the folder's own place (:func:`~fusedream_ops.safety.contained.entry_roots`)."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

    image_path = _component(folder, "image_encoder", "CLIPVisionModelWithProjection", ("config.json",))
    text_path = _component(folder, "text_encoder", "CLIPTextModelWithProjection", ("config.json",))
    tok_path = _component(folder, "tokenizer", "CLIP tokenizer", ("vocab.json", "merges.txt"))
    require_tree_contained(folder, entry_roots(folder, roots), "Kandinsky prior folder")
    dtype_kw = _transformers_dtype_kw()
    image_encoder = _load_pretrained(CLIPVisionModelWithProjection, image_path, dtype, dtype_kw)
    text_encoder = _load_pretrained(CLIPTextModelWithProjection, text_path, dtype, dtype_kw)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(tok_path, model_max_length=77, local_files_only=True)
    except Exception as exc:  # a broken vocab.json/merges.txt raises JSON, Unicode or value errors
        raise FuseDreamError(f"Could not read the tokenizer in '{tok_path}': {type(exc).__name__}: {exc}") from None
    require(len(tokenizer) > 1000, f"'{tok_path}' holds an empty or broken vocabulary ({len(tokenizer)} tokens).")
    require(image_encoder.config.projection_dim == text_encoder.config.projection_dim,
            f"'{folder}': image_encoder projects to {image_encoder.config.projection_dim} dimensions but "
            f"text_encoder to {text_encoder.config.projection_dim}; both must come from the same CLIP model.")
    mean, std = _image_processor_stats(folder)
    return KandinskyEncoders(image_encoder, text_encoder, tokenizer, folder, mean, std)


# ---------------------------------------------------------------- the encoders from single files
VISION_HEADS = {768: 12, 1024: 16, 1280: 16, 1664: 16}
"""Attention heads of the CLIP vision towers by width (B, L, H, bigG): the one size a state dict does not show."""
TEXT_HEADS = {512: 8, 768: 12, 1024: 16, 1280: 20}


def _sidecar_config(path: str, roots: Sequence[str]):
    sidecar = os.path.splitext(path)[0] + ".json"
    if not os.path.isfile(sidecar):
        return None
    return read_json_object(contained_file(sidecar, roots, "config"), "config")


def _layer_count(state: dict, prefix: str) -> int:
    layers = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(layers) + 1 if layers else 0


def _infer_config(state: dict, path: str, kind: str) -> dict:
    """The transformers config of a CLIP tower from its tensor shapes (heads from a width table)."""
    vision = kind == "vision"
    root = "vision_model" if vision else "text_model"
    proj = "visual_projection.weight" if vision else "text_projection.weight"
    pos = f"{root}.embeddings.position_embedding.weight"
    require(pos in state and proj in state,
            f"'{path}' is not a transformers CLIP{'Vision' if vision else 'Text'}ModelWithProjection state dict "
            f"(no '{pos}' / '{proj}'); use the {'clip_vision' if vision else 'text_encoders'} file in the Hugging Face "
            "format, or the prior folder.")
    width = state[pos].shape[1]
    heads = (VISION_HEADS if vision else TEXT_HEADS).get(width)
    require(heads is not None, f"'{path}': no known head count for a {width}-wide CLIP {kind} tower; put its "
                               f"transformers config.json beside it as '{os.path.splitext(os.path.basename(path))[0]}.json'.")
    config = {"hidden_size": width, "num_attention_heads": heads, "projection_dim": state[proj].shape[0],
              "num_hidden_layers": _layer_count(state, f"{root}.encoder.layers."), "hidden_act": "gelu",
              "intermediate_size": state[f"{root}.encoder.layers.0.mlp.fc1.weight"].shape[0]}
    if vision:
        patch = state[f"{root}.embeddings.patch_embedding.weight"].shape[-1]
        config.update(patch_size=patch, image_size=patch * round((state[pos].shape[0] - 1) ** 0.5))
    else:
        config.update(vocab_size=state[f"{root}.embeddings.token_embedding.weight"].shape[0],
                      max_position_embeddings=state[pos].shape[0], bos_token_id=49406, eos_token_id=49407,
                      pad_token_id=49407)
    return config


def _load_single_file(cls, config_cls, path: str, kind: str, dtype: torch.dtype, roots: Sequence[str]):
    roots = entry_roots(path, roots)
    state = read_state_dict(contained_file(path, roots, f"CLIP {kind} tower"))
    sizes = shapes_of(state)
    try:
        config = config_cls(**(_sidecar_config(path, roots) or _infer_config(state, path, kind)))
        source = f"the config of '{path}'"
        require_sizes_match(source, sizes, clip_tower_size_checks(config))
        with build_budget(sizes, source, config), torch.device("meta"):
            shapes = cls(config)  # compared with the file before the model is allocated
    except FuseDreamError:
        raise
    except Exception as exc:  # a sidecar the config class cannot build from
        raise FuseDreamError(f"the config of '{path}' does not describe a {cls.__name__}: {type(exc).__name__}: "
                             f"{exc}") from None
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}  # a buffer older files still carry
    check_state_dict(shapes, state, f"Checkpoint '{path}'")
    with no_grad_normal_tensors():
        model = cls(config)
        model.load_state_dict(state, strict=True)
    return model.to(dtype).eval().requires_grad_(False)


def load_encoders_from_files(image_encoder_path: str, text_encoder_path: str, dtype: torch.dtype = torch.float32,
                             roots: Sequence[str] = ()) -> KandinskyEncoders:
    """The prior's towers from single files in the Hugging Face key layout, e.g. ComfyUI's ``clip_vision_g.safetensors``
    and SDXL's ``clip_g.safetensors`` (the same OpenCLIP ViT-bigG/14 the Kandinsky 2.2 prior uses); the tokenizer is
    open_clip's bundled one. The trained prior is not available this way. Each file and its sidecar ``.json`` must
    resolve inside ``roots`` or the file's own folder."""
    from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    from .clip_tokenizer import bundled_clip_tokenizer

    image_encoder = _load_single_file(CLIPVisionModelWithProjection, CLIPVisionConfig, image_encoder_path,
                                      "vision", dtype, roots)
    text_encoder = _load_single_file(CLIPTextModelWithProjection, CLIPTextConfig, text_encoder_path, "text", dtype,
                                     roots)
    require(image_encoder.config.projection_dim == text_encoder.config.projection_dim,
            f"the image encoder projects to {image_encoder.config.projection_dim} dimensions but the text encoder to "
            f"{text_encoder.config.projection_dim}; both must come from the same CLIP model (ViT-bigG/14: 1280).")
    return KandinskyEncoders(image_encoder, text_encoder, bundled_clip_tokenizer(), "")


# ---------------------------------------------------------------- the trained prior (optional)
@dataclass
class TrainedPrior:
    prior: torch.nn.Module
    scheduler_config: dict


def load_trained_prior(folder: str, dtype: torch.dtype = torch.float32, roots: Sequence[str] = ()) -> TrainedPrior:
    """``prior/`` (PriorTransformer) + ``scheduler/`` (UnCLIPScheduler) of a Kandinsky 2.2 prior folder (every file
    inside ``roots`` or the folder's own place)."""
    from diffusers import PriorTransformer

    require(bool(folder), "the encoders were loaded from single files; the trained prior needs a prior folder with "
                          "prior/ and scheduler/ (load the encoders with the Prior Encoders Loader).")
    prior_path = _component(folder, "prior", "PriorTransformer, the trained diffusion prior", ("config.json",))
    sched_path = _component(folder, "scheduler", "the prior's UnCLIPScheduler", ("scheduler_config.json",))
    require_tree_contained(folder, entry_roots(folder, roots), "Kandinsky prior folder")
    scheduler_config = _scheduler_config(sched_path)
    return TrainedPrior(_load_pretrained(PriorTransformer, prior_path, dtype, "torch_dtype"), scheduler_config)


def _scheduler_config(sched_path: str) -> dict:
    """``scheduler_config.json`` checked before any scheduler (or model) is built."""
    config_path = os.path.join(sched_path, "scheduler_config.json")
    return require_scheduler_config(read_json_object(config_path, "scheduler config"), f"'{config_path}'")


# ---------------------------------------------------------------- the decoder
@dataclass
class KandinskyDecoder:
    """UNet + MoVQ + scheduler settings of the Kandinsky 2.2 decoder (custom type ``KANDINSKY22_DECODER``)."""

    unet: torch.nn.Module
    movq: torch.nn.Module
    scheduler_config: dict
    folder: str

    @property
    def embed_dim(self) -> int:
        """Width of the image embedding the UNet is conditioned on (1280 for Kandinsky 2.2)."""
        return int(self.unet.config.encoder_hid_dim)

    @property
    def movq_scale(self) -> int:
        """MoVQ's spatial down-sampling factor (8 for Kandinsky 2.2)."""
        return 2 ** (len(self.movq.config.block_out_channels) - 1)

    def make_scheduler(self):
        return decoder_scheduler(self.scheduler_config, self.folder)


def decoder_scheduler(config: dict, folder: str):
    """A fresh diffusers scheduler from the decoder's checked config. A config diffusers refuses (a ``beta_schedule`` or
    ``variance_type`` the class does not implement) is a ``[FuseDream]`` error naming the file, not diffusers' own."""
    import diffusers

    name = config.get("_class_name", "DDPMScheduler")
    require(name in DECODER_SCHEDULERS,
            f"'{folder}/scheduler' asks for {name}; supported: {', '.join(DECODER_SCHEDULERS)}.")
    try:
        return getattr(diffusers, name).from_config(config)
    except (ValueError, NotImplementedError, TypeError, KeyError) as exc:
        raise FuseDreamError(f"'{folder}/scheduler/scheduler_config.json' cannot make a {name}: {exc}") from None


def load_decoder_scheduler(folder: str, roots: Sequence[str] = ()):
    """The scheduler of a Kandinsky 2.2 decoder folder without its weights, to check a step count against before
    any model loads (its config file inside ``roots`` or the folder's own place)."""
    sched_path = _component(folder, "scheduler", "the decoder's DDPMScheduler", ("scheduler_config.json",))
    contained_file(os.path.join(sched_path, "scheduler_config.json"), entry_roots(folder, roots),
                   "Kandinsky decoder scheduler config")
    return decoder_scheduler(_scheduler_config(sched_path), folder)


def load_decoder(folder: str, dtype: torch.dtype = torch.float32, roots: Sequence[str] = ()) -> KandinskyDecoder:
    """``unet/`` + ``movq/`` + ``scheduler/`` of a Kandinsky 2.2 decoder folder (every file inside ``roots`` or the
    folder's own place)."""
    from diffusers import UNet2DConditionModel, VQModel

    unet_path = _component(folder, "unet", "UNet2DConditionModel", ("config.json",))
    movq_path = _component(folder, "movq", "VQModel (MoVQ)", ("config.json",))
    sched_path = _component(folder, "scheduler", "the decoder's DDPMScheduler", ("scheduler_config.json",))
    require_tree_contained(folder, entry_roots(folder, roots), "Kandinsky decoder folder")
    scheduler_config = _scheduler_config(sched_path)
    decoder_scheduler(scheduler_config, folder)  # before the weights load
    unet = _load_pretrained(UNet2DConditionModel, unet_path, dtype, "torch_dtype")
    require(unet.config.addition_embed_type == "image" and unet.config.encoder_hid_dim is not None,
            f"'{unet_path}' is not a Kandinsky 2.2 decoder UNet (it is not conditioned on image embeddings: "
            f"addition_embed_type={unet.config.addition_embed_type!r}).")
    movq = _load_pretrained(VQModel, movq_path, dtype, "torch_dtype")
    return KandinskyDecoder(unet, movq, scheduler_config, folder)


# ---------------------------------------------------------------- image embeddings on the wire
def as_image_embeds(value, name: str = "image_embeds") -> torch.Tensor:
    """``KANDINSKY22_IMAGE_EMBEDS`` (a ``[B,D]`` tensor) or ComfyUI's CLIP_VISION_OUTPUT (its ``image_embeds``)."""
    embeds: Optional[torch.Tensor] = value if isinstance(value, torch.Tensor) else getattr(value, "image_embeds", None)
    if embeds is None and hasattr(value, "__getitem__") and not isinstance(value, (str, bytes)):
        try:
            embeds = value["image_embeds"]
        except (KeyError, TypeError, IndexError):
            embeds = None
    require(isinstance(embeds, torch.Tensor),
            f"{name} must be a Kandinsky 2.2 image embedding or a CLIP_VISION_OUTPUT, got {type(value).__name__}.")
    if embeds.ndim == 1:
        embeds = embeds[None]
    require(embeds.ndim == 2, f"{name} must be [batch, dim], got shape {tuple(embeds.shape)}.")
    return embeds


def require_embed_dim(embeds: torch.Tensor, dim: int, name: str, target: str) -> None:
    require(embeds.shape[-1] == dim,
            f"{name} has {embeds.shape[-1]} dimensions but {target} expects {dim}. Kandinsky 2.2 uses the "
            "1280-d ViT-bigG/14 projection; prior encoders and decoder must come from the same family.")
