"""Kandinsky 2.2 nodes: its prior's CLIP encoders, text and image embeddings, and the decoder (embedding -> image).

The priors that turn a text embedding into an image embedding (OVI, TextEmb, the trained prior) are in
``nodes/ovi.py``. Model folders (entries are diffusers-layout folders): ``models/kandinsky22/`` for the prior
repository (image_encoder/, text_encoder/, tokenizer/ [, prior/, scheduler/]) and the decoder repository (unet/,
movq/, scheduler/).
"""
from __future__ import annotations

import torch

from ..fusedream_ops.core.autograd import no_grad_normal_tensors
from ..fusedream_ops.core.errors import require
from ..fusedream_ops.core.images import from_image_batch, to_image_batch
from ..fusedream_ops.models.kandinsky import (as_image_embeds, load_decoder, load_encoders, load_encoders_from_files,
                                              require_embed_dim)
from ..fusedream_ops.ovi.decode import check_decode, decode_image_embeds
from ..fusedream_ops.validation.finite import require_finite
from ..fusedream_ops.validation.prompts import truncation_warnings
from ..fusedream_ops.validation.ranges import KANDINSKY_DECODER as DECODER_RANGES
from . import comfy
from .monitor import MONITOR_INPUTS, NodeMonitor
from .node_inputs import checked_loader_function, checked_node_function
from .node_schema import FuseDreamNode
from .widgets import PRECISION, model_files, model_folders, ranged, seed_input

KANDINSKY_FOLDER = "kandinsky22"
comfy.register_model_folder(KANDINSKY_FOLDER, ())

CATEGORY = "FuseDream/kandinsky22"
ENCODERS = "KANDINSKY22_ENCODERS"
DECODER = "KANDINSKY22_DECODER"
TEXT = "KANDINSKY22_TEXT_EMBEDS"
EMBEDS = "KANDINSKY22_IMAGE_EMBEDS"

SEED = seed_input()


def node_embeds(embeds: torch.Tensor) -> torch.Tensor:
    """An embedding as a node returns it: detached fp32 on ComfyUI's intermediate device."""
    return embeds.detach().float().to(comfy.intermediate_device())


class EncodersLoader(FuseDreamNode, category=CATEGORY):
    """Loads the CLIP towers of the Kandinsky 2.2 prior repository (kandinsky-community/kandinsky-2-2-prior) from
    a folder in models/kandinsky22: image_encoder/ (ViT-bigG/14, 1280-d projection), text_encoder/ and
    tokenizer/, locally only. A missing subfolder or a checkpoint that does not match its config is an error
    naming it."""
    OUTPUTS = {"encoders": ENCODERS}
    INPUTS = {
        "prior_folder": (model_folders(KANDINSKY_FOLDER), {
            "tooltip": "The prior repository folder in models/kandinsky22 (needs image_encoder/, text_encoder/, "
                       "tokenizer/)."}),
        "precision": PRECISION,
    }

    @checked_loader_function
    def load(self, prior_folder, precision):
        return (comfy.load_model_entry(load_encoders, KANDINSKY_FOLDER, prior_folder,
                                       comfy.weight_dtype(precision, "kandinsky_encoder")),)


SINGLE_FILE_EXTENSIONS = (".safetensors", ".sft", ".bin", ".pt", ".pth")


class EncodersFromFiles(FuseDreamNode, category=CATEGORY):
    """The prior's CLIP towers from single files you may already have: a ViT-bigG/14 vision model with projection
    from models/clip_vision (e.g. clip_vision_g.safetensors) and the bigG text encoder from models/text_encoders
    (e.g. SDXL's clip_g.safetensors), in the Hugging Face key layout; the tokenizer is open_clip's bundled one.
    The architecture is read from the tensor shapes (or a .json config beside the file). The trained prior needs
    the prior folder instead."""
    OUTPUTS = {"encoders": ENCODERS}
    INPUTS = {
        "image_encoder": (model_files("clip_vision", SINGLE_FILE_EXTENSIONS),
                          {"tooltip": "CLIP vision model with projection in models/clip_vision (ViT-bigG/14, "
                                      "1280-d for Kandinsky 2.2)."}),
        "text_encoder": (model_files("text_encoders", SINGLE_FILE_EXTENSIONS),
                         {"tooltip": "CLIP text model with projection in models/text_encoders (the bigG one, "
                                     "e.g. clip_g.safetensors)."}),
        "precision": PRECISION,
    }

    @checked_loader_function
    def load(self, image_encoder, text_encoder, precision):
        return (load_encoders_from_files(comfy.resolve_model_entry("clip_vision", image_encoder),
                                         comfy.resolve_model_entry("text_encoders", text_encoder),
                                         comfy.weight_dtype(precision, "kandinsky_encoder"),
                                         comfy.model_roots("clip_vision") + comfy.model_roots("text_encoders")),)


class DecoderLoader(FuseDreamNode, category=CATEGORY):
    """Loads the Kandinsky 2.2 decoder (kandinsky-community/kandinsky-2-2-decoder) from a folder in
    models/kandinsky22: unet/, movq/ and scheduler/, locally only."""
    OUTPUTS = {"decoder": DECODER}
    INPUTS = {
        "decoder_folder": (model_folders(KANDINSKY_FOLDER), {
            "tooltip": "The decoder repository folder in models/kandinsky22 (needs unet/, movq/, scheduler/)."}),
        "precision": PRECISION,
    }

    @checked_loader_function
    def load(self, decoder_folder, precision):
        return (comfy.load_model_entry(load_decoder, KANDINSKY_FOLDER, decoder_folder,
                                       comfy.weight_dtype(precision, "vae")),)


class TextEncode(FuseDreamNode, category=CATEGORY):
    """Encodes a prompt (and a negative prompt) with the prior's CLIP text tower, as the trained prior pipeline
    does: padded to 77 tokens, projected text embedding + hidden states."""
    OUTPUTS = {"text": TEXT, "negative_text": TEXT}
    INPUTS = {
        "encoders": (ENCODERS, {"tooltip": "The prior's encoders."}),
        "prompt": ("STRING", {"default": "blue old car on a beach", "multiline": True,
                              "tooltip": "What the image should show."}),
        "negative_prompt": ("STRING", {"default": "", "multiline": True,
                                       "tooltip": "Encoded too, for a prior's negative output (may be empty)."}),
    }

    @checked_node_function
    def encode(self, encoders, prompt, negative_prompt):
        comfy.warn(truncation_warnings([prompt, negative_prompt], encoders.tokenizer))
        comfy.load_to_device(encoders.text_encoder)
        return (encoders.encode_text([prompt]), encoders.encode_text([negative_prompt]))


NEGATIVE_MODES = ("zero image", "zero tensor")


class NegativeEmbeds(FuseDreamNode, category=CATEGORY):
    """The decoder's negative (unconditional) embedding. 'zero image': the image encoder applied to an all-zero
    normalized image, the default of diffusers' prior and ECLIPSE. 'zero tensor': zeros, which gives a violet
    cast (paper Fig. 1). For a negative prompt, send the negative text through a prior (TextEmb, OVI or the
    trained prior) instead."""
    OUTPUTS = {"negative_embeds": EMBEDS}
    INPUTS = {
        "encoders": (ENCODERS, {"tooltip": "The prior's encoders (their image tower and width)."}),
        "mode": (list(NEGATIVE_MODES), {"default": "zero image",
                                        "tooltip": "zero image (recommended) or zero tensor (violet cast)."}),
    }

    @checked_node_function
    def make(self, encoders, mode):
        if mode == "zero tensor":
            return (node_embeds(torch.zeros(1, encoders.embed_dim)),)
        comfy.load_to_device(encoders.image_encoder)
        return (node_embeds(encoders.zero_image_embed()),)


class ImageEncode(FuseDreamNode, category=CATEGORY):
    """Image prompt: the projected embedding of images by the prior's image tower (resized to the tower's size,
    center-cropped, CLIP-normalized). Decode it for variations or mix it with text."""
    OUTPUTS = {"image_embeds": EMBEDS}
    INPUTS = {
        "encoders": (ENCODERS, {"tooltip": "The prior's encoders."}),
        "image": ("IMAGE", {"tooltip": "One or more images; one embedding each."}),
    }

    @checked_node_function
    def encode(self, encoders, image):
        comfy.load_to_device(encoders.image_encoder)
        with no_grad_normal_tensors():
            x = from_image_batch(image.clone())
        return (node_embeds(encoders.encode_images(x)),)


def mix_weight(default: float) -> tuple:
    return ("FLOAT", {"default": default, "min": -10.0, "max": 10.0, "step": 0.05,
                      "tooltip": "Weight of the embedding above."})


class EmbedsMix(FuseDreamNode, category=CATEGORY):
    """Weighted sum Σ wᵢ·eᵢ of image embeddings (from priors, Image Encode or From CLIP Vision), as diffusers'
    prior 'interpolate' does. Weights are used as given; make them sum to 1 to keep the embedding's scale."""
    OUTPUTS = {"image_embeds": EMBEDS}
    INPUTS = {
        "embeds_1": (EMBEDS, {"tooltip": "First embedding."}),
        "weight_1": mix_weight(0.5),
        "embeds_2": (EMBEDS, {"tooltip": "Second embedding."}),
        "weight_2": mix_weight(0.5),
    }
    OPTIONAL = {
        "embeds_3": (EMBEDS, {"tooltip": "Optional third embedding."}),
        "weight_3": mix_weight(0.0),
        "embeds_4": (EMBEDS, {"tooltip": "Optional fourth embedding."}),
        "weight_4": mix_weight(0.0),
    }

    @checked_node_function
    def mix(self, embeds_1, weight_1, embeds_2, weight_2, embeds_3=None, weight_3=0.0, embeds_4=None, weight_4=0.0):
        parts = [(as_image_embeds(e, f"embeds_{i}").float().cpu(), w)
                 for i, (e, w) in enumerate([(embeds_1, weight_1), (embeds_2, weight_2), (embeds_3, weight_3),
                                             (embeds_4, weight_4)], start=1) if e is not None]
        dim, batch = parts[0][0].shape[1], max(p.shape[0] for p, _ in parts)
        for i, (p, _) in enumerate(parts, start=1):
            require_embed_dim(p, dim, f"embeds_{i}", "embeds_1")
            require(p.shape[0] in (1, batch), f"embeds_{i} holds {p.shape[0]} embeddings; use 1 or {batch}.")
        return (node_embeds(sum(w * p for p, w in parts).expand(batch, -1)),)


class FromClipVision(FuseDreamNode, category=CATEGORY):
    """Core's CLIP_VISION_OUTPUT (CLIP Vision Encode) as a Kandinsky 2.2 image embedding, for image variations
    with stock nodes. The vision model must be ViT-bigG/14 with the 1280-d projection (e.g.
    clip_vision_g.safetensors); the decoder refuses other widths."""
    OUTPUTS = {"image_embeds": EMBEDS}
    INPUTS = {
        "clip_vision_output": ("CLIP_VISION_OUTPUT", {
            "tooltip": "The output of CLIP Vision Encode (its projected image_embeds are used)."}),
    }

    @checked_node_function
    def convert(self, clip_vision_output):
        embeds = as_image_embeds(clip_vision_output, "clip_vision_output")
        require_finite("clip_vision_output", embeds)
        return (node_embeds(embeds),)


class Decoder(FuseDreamNode, category=CATEGORY):
    """Kandinsky 2.2 decoder: denoises MoVQ latents conditioned on the image embedding with classifier-free
    guidance against the negative embedding (as diffusers' KandinskyV22Pipeline), then decodes with MoVQ. For
    image variations with stock nodes, convert core's CLIP_VISION_OUTPUT with 'Kandinsky 2.2 Embeds from CLIP
    Vision'. Width and height must be multiples of 64 (refused otherwise, not rounded). Progress each step; a
    preview of the predicted image every 'preview_every' steps (each costs a MoVQ decode)."""
    OUTPUTS = {"image": ("IMAGE", "The decoded images."),
               "frames": ("IMAGE", "Predicted images kept every 'keep_frames_every' steps plus the final one.")}
    INPUTS = {
        "decoder": (DECODER, {"tooltip": "The Kandinsky 2.2 decoder."}),
        "image_embeds": (EMBEDS, {"tooltip": "What to draw: an image embedding from a prior, "
                                             "Image Encode, a mix or From CLIP Vision."}),
        "negative_embeds": (EMBEDS, {"tooltip": "The unconditional embedding (Negative Embeds "
                                                "'zero image' is the usual choice)."}),
        "steps": ranged(DECODER_RANGES["steps"], 50, "Denoising steps (ECLIPSE 50, diffusers default 100). The stock "
                        "decoder's scheduler runs 1 to 999; a count it cannot run is refused before any work."),
        "guidance": ranged(DECODER_RANGES["guidance"], 4.0, "Classifier-free guidance scale; ≤ 1 disables guidance.",
                           step=0.1),
        "width": ranged(DECODER_RANGES["width"], 512, "Image width, a multiple of 64.", step=64),
        "height": ranged(DECODER_RANGES["height"], 512, "Image height, a multiple of 64.", step=64),
        "seed": SEED,
        "images_per_embed": ("INT", {"default": 1, "min": 1, "max": 64,
                                     "tooltip": "Images drawn for each embedding, in one batch."}),
        **MONITOR_INPUTS,
    }

    @checked_node_function
    def decode(self, decoder, image_embeds, negative_embeds, steps, guidance, width, height, seed, images_per_embed,
               preview_every=5, keep_frames_every=0, unique_id=None):
        positive = as_image_embeds(image_embeds, "image_embeds")
        negative = as_image_embeds(negative_embeds, "negative_embeds")
        check_decode(decoder, steps, width, height, images_per_embed)  # before ComfyUI loads the models
        comfy.load_to_device(decoder.unet, decoder.movq)
        monitor = NodeMonitor(unique_id, steps, preview_every, keep_frames_every, label="decoder")
        images = decode_image_embeds(decoder, positive, negative, steps, guidance, width, height, seed,
                                     images_per_embed, preview_every, on_step=monitor)
        return {"ui": monitor.ui(), "result": (to_image_batch(images), monitor.frames())}


NODE_CLASS_MAPPINGS = {
    "FuseDreamKandinsky22EncodersLoader": EncodersLoader,
    "FuseDreamKandinsky22EncodersFromFiles": EncodersFromFiles,
    "FuseDreamKandinsky22DecoderLoader": DecoderLoader,
    "FuseDreamKandinsky22TextEncode": TextEncode,
    "FuseDreamKandinsky22NegativeEmbeds": NegativeEmbeds,
    "FuseDreamKandinsky22ImageEncode": ImageEncode,
    "FuseDreamKandinsky22EmbedsMix": EmbedsMix,
    "FuseDreamKandinsky22FromCLIPVision": FromClipVision,
    "FuseDreamKandinsky22Decoder": Decoder,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FuseDreamKandinsky22EncodersLoader": "Kandinsky 2.2 Prior Encoders Loader (FuseDream)",
    "FuseDreamKandinsky22EncodersFromFiles": "Kandinsky 2.2 Prior Encoders from Single Files (FuseDream)",
    "FuseDreamKandinsky22DecoderLoader": "Kandinsky 2.2 Decoder Loader (FuseDream)",
    "FuseDreamKandinsky22TextEncode": "Kandinsky 2.2 Text Encode (FuseDream)",
    "FuseDreamKandinsky22NegativeEmbeds": "Kandinsky 2.2 Negative Embeds (FuseDream)",
    "FuseDreamKandinsky22ImageEncode": "Kandinsky 2.2 Image Encode (FuseDream)",
    "FuseDreamKandinsky22EmbedsMix": "Kandinsky 2.2 Embeds Mix (FuseDream)",
    "FuseDreamKandinsky22FromCLIPVision": "Kandinsky 2.2 Embeds from CLIP Vision (FuseDream)",
    "FuseDreamKandinsky22Decoder": "Kandinsky 2.2 Decoder (FuseDream)",
}
