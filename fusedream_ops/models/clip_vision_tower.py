"""A CLIP scorer whose image tower is someone else's CLIP ViT (ComfyUI's CLIP_VISION) and whose text tower is open_clip.

ComfyUI's CLIP Vision Loader builds a Hugging-Face-layout ViT (``vision_model.*`` + ``visual_projection``) from the
file's state dict; the pack's text side is open_clip. The two halves score together only when they are the two
towers of one trained CLIP: same width, depth, patch, input size, embedding width and activation, and the same
weights. :func:`require_same_clip` compares the open_clip file's own image tower with the CLIP_VISION's (shapes, then
the projection and class token) and refuses with both names otherwise; the open_clip image tower is then dropped,
so only ComfyUI's copy (memory-managed by ComfyUI) stays in memory.

The tower runs as :func:`hf_vit_features`, a functional forward over the state dict, not as ComfyUI's module:
ComfyUI's CLIP layers add residuals in place (``x += attn(x)``), which autograd refuses, and the optimizers need
gradients through the tower. Like ComfyUI's own CLIP vision encode it computes in fp32 whatever the weights' dtype.
Nothing here imports ComfyUI: ``nodes/comfy.py`` supplies the state dict, head count and activation of ComfyUI's model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from ..core.autograd import no_grad_normal_tensors
from ..core.errors import FuseDreamError, require
from .clip import ClipScorer

PREFIX = "vision_model."


@dataclass(frozen=True)
class TowerShape:
    width: int
    heads: int
    layers: int
    patch_size: int
    image_size: int
    embed_dim: int
    activation: str


def activation_name(function) -> str:
    """'quick_gelu' or 'gelu' (or 'other'), told apart by their values at 1 (0.8458 and 0.8413)."""
    with no_grad_normal_tensors():
        value = float(function(torch.ones(1))[0])
    for name, expected in (("quick_gelu", 1 / (1 + torch.exp(torch.tensor(-1.702)).item())),
                           ("gelu", float(F.gelu(torch.ones(1))[0]))):
        if abs(value - expected) < 1e-4:
            return name
    return "other"


def _layer_count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def hf_tower_shape(state: Mapping[str, torch.Tensor], heads: int, activation: str, what: str) -> TowerShape:
    """The shape of a Hugging-Face-layout CLIP ViT with projection (ComfyUI's CLIPVisionModelProjection); a clear
    error for the other image encoders ComfyUI loads as CLIP_VISION (SigLIP, DINOv2) or a ViT without projection."""
    needed = (PREFIX + "embeddings.class_embedding", PREFIX + "embeddings.patch_embedding.weight",
              PREFIX + "pre_layrnorm.weight", "visual_projection.weight")
    missing = [k for k in needed if k not in state]
    require(not missing, f"{what} is not an open_clip-compatible CLIP ViT (no {', '.join(missing)}): SigLIP, DINOv2 "
                         f"and other image encoders cannot score against a CLIP text tower. Use a CLIP ViT file such "
                         f"as clip_vision_h.safetensors (ViT-H-14) or clip_vision_g.safetensors (ViT-bigG-14).")
    patch = state[PREFIX + "embeddings.patch_embedding.weight"]
    positions = state[PREFIX + "embeddings.position_embedding.weight"].shape[0]
    return TowerShape(width=patch.shape[0], heads=heads, layers=_layer_count(state, PREFIX + "encoder.layers."),
                      patch_size=patch.shape[-1], image_size=patch.shape[-1] * round((positions - 1) ** 0.5),
                      embed_dim=state["visual_projection.weight"].shape[0], activation=activation)


def open_clip_tower_shape(model) -> TowerShape:
    """The image tower shape of an open_clip ViT CLIP (the activation is the one both its towers use)."""
    visual = model.visual
    require(hasattr(visual, "conv1") and getattr(visual, "proj", None) is not None,
            "the open_clip model is not a ViT CLIP with a projected image tower (timm and ModifiedResNet image towers "
            "have no CLIP_VISION counterpart).")
    blocks = visual.transformer.resblocks
    patch = visual.conv1.weight.shape[-1]
    return TowerShape(width=visual.conv1.weight.shape[0], heads=blocks[0].attn.num_heads, layers=len(blocks),
                      patch_size=patch, image_size=patch * round((visual.positional_embedding.shape[0] - 1) ** 0.5),
                      embed_dim=visual.proj.shape[1], activation=activation_name(blocks[0].mlp.gelu))


def open_clip_visual_as_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip checkpoint's ``visual.*`` tensors renamed to the Hugging Face / ComfyUI layout (the inverse of
    what ComfyUI's ``convert_to_transformers`` reads; q/k/v split out of ``in_proj``, ``proj`` transposed)."""
    out = {}
    renames = {"visual.class_embedding": PREFIX + "embeddings.class_embedding",
               "visual.conv1.weight": PREFIX + "embeddings.patch_embedding.weight",
               "visual.positional_embedding": PREFIX + "embeddings.position_embedding.weight",
               "visual.ln_pre.weight": PREFIX + "pre_layrnorm.weight",
               "visual.ln_pre.bias": PREFIX + "pre_layrnorm.bias",
               "visual.ln_post.weight": PREFIX + "post_layernorm.weight",
               "visual.ln_post.bias": PREFIX + "post_layernorm.bias"}
    for key, value in state.items():
        if key in renames:
            out[renames[key]] = value
        elif key == "visual.proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif key.startswith("visual.transformer.resblocks."):
            index, rest = key[len("visual.transformer.resblocks."):].split(".", 1)
            layer = f"{PREFIX}encoder.layers.{index}."
            if rest.startswith("attn.in_proj_"):
                kind = rest.rsplit("_", 1)[1]  # weight or bias
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{layer}self_attn.{name}.{kind}"] = part.contiguous()
                continue
            for old, new in (("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."),
                             ("attn.out_proj.", "self_attn.out_proj."), ("mlp.c_fc.", "mlp.fc1."),
                             ("mlp.c_proj.", "mlp.fc2.")):
                if rest.startswith(old):
                    out[layer + new + rest[len(old):]] = value
    return out


SAME_WEIGHTS_TOLERANCE = 1e-2
"""Largest relative difference of the compared tensors for two towers to count as one training (fp16 storage and
ComfyUI's text-encoder dtype stay far below it; another training differs by order 1)."""


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def require_same_clip(vision_state: Mapping[str, torch.Tensor], heads: int, activation: str,
                      text_scorer: ClipScorer, vision_name: str, text_name: str) -> TowerShape:
    """Refuse unless the CLIP_VISION ``vision_state`` is the image tower of ``text_scorer``'s CLIP: same shape,
    heads, activation and (within :data:`SAME_WEIGHTS_TOLERANCE`) projection and class token."""
    image = hf_tower_shape(vision_state, heads, activation, f"the CLIP_VISION model '{vision_name}'")
    text = open_clip_tower_shape(text_scorer.model)
    if image != text:
        differing = ", ".join(f"{k} {v} vs {asdict(text)[k]}" for k, v in asdict(image).items() if asdict(text)[k] != v)
        hint = (" Choose the -quickgelu architecture for OpenAI-trained weights (or the plain one otherwise)."
                if image.activation != text.activation else "")
        raise FuseDreamError(f"the CLIP_VISION model '{vision_name}' and the text tower's CLIP '{text_name}' "
                             f"({text_scorer.name}) are different architectures ({differing}): they cannot score "
                             f"together.{hint}")
    ours = open_clip_visual_as_hf({f"visual.{k}": v for k, v in text_scorer.model.visual.state_dict().items()
                                   if k in ("proj", "class_embedding")})
    for key, value in ours.items():
        difference = _relative_difference(vision_state[key], value)
        if difference > SAME_WEIGHTS_TOLERANCE:
            raise FuseDreamError(
                f"the CLIP_VISION model '{vision_name}' and the text tower's CLIP '{text_name}' have the same "
                f"architecture but come from different trainings ({key} differs by {difference:.0%}): their image and "
                f"text embeddings would not match. Use the open_clip file of the same model (e.g. laion's "
                f"open_clip_pytorch_model.bin for clip_vision_h.safetensors).")
    return image


ACTIVATIONS = {"gelu": F.gelu, "quick_gelu": lambda a: a * torch.sigmoid(1.702 * a)}


def hf_vit_features(state: Mapping[str, torch.Tensor], pixels: torch.Tensor, heads: int,
                    activation: str) -> torch.Tensor:
    """Projected features ``[N, D]`` of CLIP-normalised ``pixels`` ``[N,3,S,S]`` by the Hugging-Face-layout CLIP ViT
    in ``state``, computed in fp32 on the pixels' device (weights cast per call), differentiable in ``pixels``.

    CLIP's ViT: patch embedding + class token + positions, pre-norm, pre-LN blocks (attention, MLP), post-norm on
    the class token, projection.
    """
    require(activation in ACTIVATIONS, f"the CLIP_VISION model's activation is {activation}, not gelu/quick_gelu.")

    def w(key: str) -> torch.Tensor:
        return state[key].to(pixels.device, torch.float32)

    def norm(x, name):
        return F.layer_norm(x, x.shape[-1:], w(name + ".weight"), w(name + ".bias"), 1e-5)

    def linear(x, name, bias=True):
        return F.linear(x, w(name + ".weight"), w(name + ".bias") if bias else None)

    patch = w(PREFIX + "embeddings.patch_embedding.weight")
    x = F.conv2d(pixels.float(), patch, stride=patch.shape[-1]).flatten(2).transpose(1, 2)
    token = w(PREFIX + "embeddings.class_embedding").expand(x.shape[0], 1, -1)
    x = torch.cat([token, x], dim=1) + w(PREFIX + "embeddings.position_embedding.weight")
    x = norm(x, PREFIX + "pre_layrnorm")
    n, length, width = x.shape
    act = ACTIVATIONS[activation]
    for i in range(_layer_count(state, PREFIX + "encoder.layers.")):
        layer = f"{PREFIX}encoder.layers.{i}."
        h = norm(x, layer + "layer_norm1")
        q, k, v = (linear(h, layer + f"self_attn.{p}_proj").view(n, length, heads, -1).transpose(1, 2)
                   for p in ("q", "k", "v"))
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, width)
        x = x + linear(h, layer + "self_attn.out_proj")
        x = x + linear(act(linear(norm(x, layer + "layer_norm2"), layer + "mlp.fc1")), layer + "mlp.fc2")
    return linear(norm(x[:, 0], PREFIX + "post_layernorm"), "visual_projection", bias=False)


class VisionTowerScorer:
    """The pack's scorer interface (see :class:`~fusedream_ops.models.clip.ClipScorer`) with another CLIP ViT as the
    image tower: ``image_tower(pixels)`` gives projected features of CLIP-normalised pixels at ``image_size``;
    ``before_images()`` runs before every image batch (ComfyUI loads its model there).

    ``model`` is the open_clip text tower (its image tower removed), so nodes load and place it like any scorer's.
    """

    def __init__(self, text_scorer: ClipScorer, image_tower: Callable[[torch.Tensor], torch.Tensor],
                 tower_device: Callable[[], torch.device], image_size: int, mean, std, name: str,
                 before_images: Callable[[], None] = lambda: None):
        with no_grad_normal_tensors():
            text_scorer.model.visual = torch.nn.Identity()  # ComfyUI's copy is the one used
            self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
            self.std = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)
        self.text = text_scorer
        self.model = text_scorer.model
        self.tokenizer = text_scorer.tokenizer
        self.name = name
        self.image_size = (int(image_size), int(image_size))
        self.image_tower = image_tower
        self.tower_device = tower_device
        self.before_images = before_images

    @property
    def device(self) -> torch.device:
        return self.text.device

    @property
    def dtype(self) -> torch.dtype:
        return self.text.dtype

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return self.text.encode_text(texts)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to the tower's input (antialiased when shrinking) and normalise with its mean/std, in fp32 (the
        tower casts its weights to the input's dtype, as ComfyUI's own CLIP vision encode does)."""
        images = images.to(self.tower_device(), torch.float32)
        if tuple(images.shape[-2:]) != self.image_size:
            shrink = images.shape[-2] > self.image_size[0] or images.shape[-1] > self.image_size[1]
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False,
                                   antialias=shrink)
        return (images - self.mean.to(images.device)) / self.std.to(images.device)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features ``[N, D]`` of images in 0..1, on the images' device; differentiable."""
        self.before_images()
        features = self.image_tower(self.prepare(images))
        return F.normalize(features.float(), dim=-1).to(images.device)


def ordinary_parameters(module: torch.nn.Module) -> None:
    """Replace parameters and buffers made in inference mode (ComfyUI builds and loads models inside it) with ordinary
    copies, so that gradients can flow through the module to its input."""
    with no_grad_normal_tensors():
        for sub in module.modules():
            for name, value in list(sub._parameters.items()):
                if value is not None and value.is_inference():
                    sub._parameters[name] = torch.nn.Parameter(value.clone(), requires_grad=False)
            for name, value in list(sub._buffers.items()):
                if value is not None and value.is_inference():
                    sub._buffers[name] = value.clone()
