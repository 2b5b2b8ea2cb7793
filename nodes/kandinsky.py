"""Kandinsky 2.2 + OVI nodes: text -> image embedding (OVI, TextEmb or the trained prior) -> Kandinsky 2.2 decoder.

Model folders (entries are diffusers-layout folders): ``models/kandinsky22/`` for the prior repository
(image_encoder/, text_encoder/, tokenizer/ [, prior/, scheduler/]) and the decoder repository (unet/, movq/,
scheduler/); ``models/ovi_reference/`` for reference statistics files (.safetensors).
"""
from __future__ import annotations

import json
import os

import torch

from ..fusedream_ops.autograd import no_grad_normal_tensors
from ..fusedream_ops.errors import require
from ..fusedream_ops.images import from_image_batch, to_image_batch
from ..fusedream_ops.kandinsky import (as_image_embeds, load_decoder, load_encoders,
                                       load_encoders_from_files, load_trained_prior, require_embed_dim)
from ..fusedream_ops.kandinsky_decode import decode_image_embeds
from ..fusedream_ops.kandinsky_prior import run_trained_prior, text_as_image_embeds
from ..fusedream_ops.ovi import TOKEN_ENTRIES, MAX_TOKENS, optimize_ovi
from ..fusedream_ops.reference_stats import (build_reference_stats, embed_image_files, image_files,
                                             load_reference_stats, save_reference_stats)
from ..fusedream_ops.validation.finite import require_finite
from ..fusedream_ops.validation.node_inputs import checked_loader_function, checked_node_function
from ..fusedream_ops.validation.names import require_file_name
from ..fusedream_ops.validation.prompts import truncation_warnings
from ..fusedream_ops.precision import DTYPES
from . import comfy
from .fusedream import PRECISION
from .monitor import MONITOR_INPUTS, NodeMonitor

KANDINSKY_FOLDER = "kandinsky22"
REFERENCE_FOLDER = "ovi_reference"
comfy.register_model_folder(KANDINSKY_FOLDER, ())
comfy.register_model_folder(REFERENCE_FOLDER, (".safetensors",))

CATEGORY = "FuseDream/kandinsky22"
ENCODERS = "KANDINSKY22_ENCODERS"
DECODER = "KANDINSKY22_DECODER"
TEXT = "KANDINSKY22_TEXT_EMBEDS"
EMBEDS = "KANDINSKY22_IMAGE_EMBEDS"
STATS = "OVI_REFERENCE_STATS"

SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                "tooltip": "Random seed; the same seed reproduces the same result."})
HIDDEN = {"hidden": {"unique_id": "UNIQUE_ID"}}


def _folders() -> list[str]:
    return comfy.list_model_entries(KANDINSKY_FOLDER, want_dirs=True)


def _dtype(precision: str, role: str) -> torch.dtype:
    """The loader's dtype. Outside ComfyUI, ``auto`` on a CPU stays fp32 for Kandinsky: OVI's optimisation and the
    reference statistics (Ledoit–Wolf shrinkage of a few embeddings) are validated in fp32 only."""
    if precision == "auto" and comfy.model_dtype(role) is None and comfy.torch_device().type == "cpu":
        return torch.float32
    return DTYPES[comfy.loader_precision(precision, role)]


def _out(embeds: torch.Tensor) -> torch.Tensor:
    return embeds.detach().float().to(comfy.intermediate_device())


class EncodersLoader:
    DESCRIPTION = ("Loads the CLIP towers of the Kandinsky 2.2 prior repository (kandinsky-community/"
                   "kandinsky-2-2-prior) from a folder in models/kandinsky22: image_encoder/ (ViT-bigG/14, 1280-d "
                   "projection), text_encoder/ and tokenizer/, locally only. A missing subfolder or a checkpoint that "
                   "does not match its config is an error naming it.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (ENCODERS,)
    RETURN_NAMES = ("encoders",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "prior_folder": (_folders(), {"tooltip": "The prior repository folder in models/kandinsky22 (needs "
                                                     "image_encoder/, text_encoder/, tokenizer/)."}),
            "precision": PRECISION,
        }}

    @checked_loader_function
    def load(self, prior_folder, precision):
        return (load_encoders(comfy.resolve_model_entry(KANDINSKY_FOLDER, prior_folder),
                              _dtype(precision, "text_encoder"), comfy.model_roots(KANDINSKY_FOLDER)),)


SINGLE_FILE_EXTENSIONS = (".safetensors", ".sft", ".bin", ".pt", ".pth")


class EncodersFromFiles:
    DESCRIPTION = ("The prior's CLIP towers from single files you may already have: a ViT-bigG/14 vision model with "
                   "projection from models/clip_vision (e.g. clip_vision_g.safetensors) and the bigG text encoder "
                   "from models/text_encoders (e.g. SDXL's clip_g.safetensors), in the Hugging Face key layout; the "
                   "tokenizer is open_clip's bundled one. The architecture is read from the tensor shapes (or a .json "
                   "config beside the file). The trained prior needs the prior folder instead.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (ENCODERS,)
    RETURN_NAMES = ("encoders",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image_encoder": (comfy.list_model_entries("clip_vision", want_dirs=False,
                                                       extensions=SINGLE_FILE_EXTENSIONS),
                              {"tooltip": "CLIP vision model with projection in models/clip_vision (ViT-bigG/14, "
                                          "1280-d for Kandinsky 2.2)."}),
            "text_encoder": (comfy.list_model_entries("text_encoders", want_dirs=False,
                                                      extensions=SINGLE_FILE_EXTENSIONS),
                             {"tooltip": "CLIP text model with projection in models/text_encoders (the bigG one, "
                                         "e.g. clip_g.safetensors)."}),
            "precision": PRECISION,
        }}

    @checked_loader_function
    def load(self, image_encoder, text_encoder, precision):
        return (load_encoders_from_files(comfy.resolve_model_entry("clip_vision", image_encoder),
                                         comfy.resolve_model_entry("text_encoders", text_encoder),
                                         _dtype(precision, "text_encoder"),
                                         comfy.model_roots("clip_vision") + comfy.model_roots("text_encoders")),)


class DecoderLoader:
    DESCRIPTION = ("Loads the Kandinsky 2.2 decoder (kandinsky-community/kandinsky-2-2-decoder) from a folder in "
                   "models/kandinsky22: unet/, movq/ and scheduler/, locally only.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (DECODER,)
    RETURN_NAMES = ("decoder",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "decoder_folder": (_folders(), {"tooltip": "The decoder repository folder in models/kandinsky22 (needs "
                                                       "unet/, movq/, scheduler/)."}),
            "precision": PRECISION,
        }}

    @checked_loader_function
    def load(self, decoder_folder, precision):
        return (load_decoder(comfy.resolve_model_entry(KANDINSKY_FOLDER, decoder_folder), _dtype(precision, "vae"),
                             comfy.model_roots(KANDINSKY_FOLDER)),)


class TextEncode:
    DESCRIPTION = ("Encodes a prompt (and a negative prompt) with the prior's CLIP text tower, as the trained prior "
                   "pipeline does: padded to 77 tokens, projected text embedding + hidden states.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = (TEXT, TEXT)
    RETURN_NAMES = ("text", "negative_text")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "encoders": (ENCODERS, {"tooltip": "The prior's encoders."}),
            "prompt": ("STRING", {"default": "blue old car on a beach", "multiline": True,
                                  "tooltip": "What the image should show."}),
            "negative_prompt": ("STRING", {"default": "", "multiline": True,
                                           "tooltip": "Encoded too, for a prior's negative output (may be empty)."}),
        }}

    @checked_node_function
    def encode(self, encoders, prompt, negative_prompt):
        comfy.warn(truncation_warnings([prompt, negative_prompt], encoders.tokenizer))
        comfy.load_to_device(encoders.text_encoder)
        return (encoders.encode_text([prompt]), encoders.encode_text([negative_prompt]))


class OVIPrior:
    DESCRIPTION = (
        "OVI (Optimization-based Visual Inversion): a training-free prior. Random pseudo-tokens go through the "
        "prior's CLIP vision tower and are optimized (AdamW, weight decay 0.01) so the projected image embedding's "
        "cosine similarity to the text embedding rises; the best iterate comes out, unnormalized like a trained "
        "prior's. Choices where the paper is silent: tokens enter as patch embeddings (class token prepended, "
        "position embeddings added, class output pooled; 'bare' = tokens alone) and start at N(0, σ²) with σ the "
        "RMS of the position embeddings, lr is in units of σ; loss = (1 − cos) + λ_M·sqrt((e−μ)ᵀΣ⁻¹(e−μ)) + "
        "λ_N·(1 − cos to the nearest reference). λ_M/λ_N need reference statistics. No image exists while "
        "optimizing, so the chart shows the cosine and 'frames' is a 1×1 placeholder.")
    CATEGORY = CATEGORY
    FUNCTION = "optimize"
    RETURN_TYPES = (EMBEDS, "FLOAT", "STRING", "IMAGE")
    RETURN_NAMES = ("image_embeds", "cosine", "history", "frames")
    OUTPUT_TOOLTIPS = ("The optimized image embedding (best iterate).", "Its cosine similarity to the text embedding.",
                       "The similarity history as JSON: {\"best_step\": n, \"cosine\": [...], ...} one value per step.",
                       "Placeholder (an embedding has no image): a 1×1 black frame.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "encoders": (ENCODERS, {"tooltip": "The prior's encoders (the image tower is what OVI optimizes through)."}),
            "text": (TEXT, {"tooltip": "The prompt's text embedding (target of the cosine similarity)."}),
            "num_tokens": ("INT", {"default": 1, "min": 1, "max": MAX_TOKENS,
                                   "tooltip": "Pseudo-tokens (paper: 1 to 6). More tokens reach a higher similarity "
                                              "plateau and look more like TextEmb."}),
            "steps": ("INT", {"default": 500, "min": 1, "max": 100_000,
                              "tooltip": "Optimization steps (paper: 500 to 1000)."}),
            "lr": ("FLOAT", {"default": 0.1, "min": 1e-5, "max": 10.0, "step": 0.001, "round": False,
                             "tooltip": "AdamW learning rate, in units of the position embeddings' scale."}),
            "seed": SEED,
            "lambda_m": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.001, "round": False,
                                   "tooltip": "Mahalanobis constraint weight (paper 0.009; ≥ 0.05 collapses every "
                                              "prompt to the reference mean). Needs reference_stats."}),
            "lambda_n": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.01, "round": False,
                                   "tooltip": "Nearest-neighbour constraint weight (paper 0.5). Needs reference_stats."}),
            "token_entry": (list(TOKEN_ENTRIES), {"default": "patches",
                                                 "tooltip": "patches: tokens replace patch embeddings (class token + "
                                                            "positions added). bare: tokens alone, first one pooled."}),
            **MONITOR_INPUTS,
        }, "optional": {
            "reference_stats": (STATS, {"tooltip": "Real-image statistics for the λ_M / λ_N constraints."}),
        }, **HIDDEN}

    @checked_node_function
    def optimize(self, encoders, text, num_tokens, steps, lr, seed, lambda_m, lambda_n, token_entry,
                 preview_every=5, keep_frames_every=0, reference_stats=None, unique_id=None):
        require(text.text_embeds.shape[0] == 1, f"text must hold one prompt, got {text.text_embeds.shape[0]}.")
        comfy.load_to_device(encoders.image_encoder)
        monitor = NodeMonitor(unique_id, steps, preview_every, keep_frames_every, label="OVI")
        result = optimize_ovi(encoders.image_encoder, text.text_embeds[0], num_tokens, steps, lr, seed,
                              reference_stats, lambda_m, lambda_n, token_entry, on_step=monitor)
        history = json.dumps({"best_step": result.best_step, **{k: [round(v, 6) for v in series]
                                                                for k, series in result.history.items()}})
        return {"ui": monitor.ui(),
                "result": (_out(result.image_embeds), result.best_cosine, history, monitor.frames())}


class TextEmbPrior:
    DESCRIPTION = ("TextEmb, the paper's baseline prior: the projected text embedding used directly as the image "
                   "embedding. Scores high on T2I-CompBench++ but looks worse than OVI with constraints.")
    CATEGORY = CATEGORY
    FUNCTION = "convert"
    RETURN_TYPES = (EMBEDS,)
    RETURN_NAMES = ("image_embeds",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": (TEXT, {"tooltip": "A text embedding (e.g. the prompt or the negative prompt)."})}}

    @checked_node_function
    def convert(self, text):
        return (_out(text_as_image_embeds(text)),)


class TrainedPrior:
    DESCRIPTION = ("Kandinsky 2.2's trained diffusion prior (diffusers KandinskyV22PriorPipeline) on the prior "
                   "folder's prior/ and scheduler/ weights, for comparison with OVI on the same seed. The negative "
                   "output is the prior's embedding of the negative text, or the zero-image embedding without one.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = (EMBEDS, EMBEDS)
    RETURN_NAMES = ("image_embeds", "negative_embeds")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "encoders": (ENCODERS, {"tooltip": "The prior's encoders; the prior weights are read from the same folder "
                                               "(prior/ and scheduler/)."}),
            "text": (TEXT, {"tooltip": "The prompt (its text is re-encoded by the pipeline)."}),
            "steps": ("INT", {"default": 25, "min": 2, "max": 1000,
                              "tooltip": "Prior denoising steps (diffusers 25; the UnCLIP scheduler needs at least 2)."}),
            "guidance": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 30.0, "step": 0.1,
                                   "tooltip": "Classifier-free guidance scale of the prior (diffusers 4.0)."}),
            "seed": SEED,
        }, "optional": {
            "negative_text": (TEXT, {"tooltip": "Negative prompt for the prior's unconditional branch."}),
        }, **HIDDEN}

    @checked_node_function
    def run(self, encoders, text, steps, guidance, seed, negative_text=None, unique_id=None):
        dtype = next(encoders.image_encoder.parameters()).dtype
        cached = getattr(self, "_prior", None)
        if cached is None or cached[0] != (encoders.folder, dtype):
            self._prior = cached = ((encoders.folder, dtype), load_trained_prior(encoders.folder, dtype,
                                                                                 comfy.model_roots(KANDINSKY_FOLDER)))
        prior = cached[1]
        comfy.load_to_device(prior.prior, encoders.text_encoder, encoders.image_encoder)
        bar = comfy.ProgressBar(steps, None if unique_id is None else str(unique_id))

        def on_step(step):
            comfy.throw_if_interrupted()
            bar.update(step.step, step.total)

        negative = negative_text.prompts[0] if negative_text is not None else None
        embeds, negative_embeds = run_trained_prior(encoders, prior, text.prompts, negative, steps, guidance, seed,
                                                    on_step=on_step)
        return (_out(embeds), _out(negative_embeds))


NEGATIVE_MODES = ("zero image", "zero tensor")


class NegativeEmbeds:
    DESCRIPTION = ("The decoder's negative (unconditional) embedding. 'zero image': the image encoder applied to an "
                   "all-zero normalized image, the default of diffusers' prior and ECLIPSE. 'zero tensor': zeros, "
                   "which gives a violet cast (paper Fig. 1). For a negative prompt, send the negative text through a "
                   "prior (TextEmb, OVI or the trained prior) instead.")
    CATEGORY = CATEGORY
    FUNCTION = "make"
    RETURN_TYPES = (EMBEDS,)
    RETURN_NAMES = ("negative_embeds",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "encoders": (ENCODERS, {"tooltip": "The prior's encoders (their image tower and width)."}),
            "mode": (list(NEGATIVE_MODES), {"default": "zero image",
                                            "tooltip": "zero image (recommended) or zero tensor (violet cast)."}),
        }}

    @checked_node_function
    def make(self, encoders, mode):
        require(mode in NEGATIVE_MODES, f"mode must be one of {', '.join(NEGATIVE_MODES)}, got {mode!r}.")
        if mode == "zero tensor":
            return (_out(torch.zeros(1, encoders.embed_dim)),)
        comfy.load_to_device(encoders.image_encoder)
        return (_out(encoders.zero_image_embed()),)


class ImageEncode:
    DESCRIPTION = ("Image prompt: the projected embedding of images by the prior's image tower (resized to the "
                   "tower's size, center-cropped, CLIP-normalized). Decode it for variations or mix it with text.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = (EMBEDS,)
    RETURN_NAMES = ("image_embeds",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "encoders": (ENCODERS, {"tooltip": "The prior's encoders."}),
            "image": ("IMAGE", {"tooltip": "One or more images; one embedding each."}),
        }}

    @checked_node_function
    def encode(self, encoders, image):
        comfy.load_to_device(encoders.image_encoder)
        with no_grad_normal_tensors():
            x = from_image_batch(image.clone())
        return (_out(encoders.encode_images(x)),)


class EmbedsMix:
    DESCRIPTION = ("Weighted sum Σ wᵢ·eᵢ of image embeddings (from priors, Image Encode or From CLIP Vision), as "
                   "diffusers' prior 'interpolate' does. Weights are used as "
                   "given; make them sum to 1 to keep the embedding's scale.")
    CATEGORY = CATEGORY
    FUNCTION = "mix"
    RETURN_TYPES = (EMBEDS,)
    RETURN_NAMES = ("image_embeds",)

    @classmethod
    def INPUT_TYPES(cls):
        def weight(default):
            return ("FLOAT", {"default": default, "min": -10.0, "max": 10.0, "step": 0.05,
                              "tooltip": "Weight of the embedding above."})

        return {"required": {
            "embeds_1": (EMBEDS, {"tooltip": "First embedding."}),
            "weight_1": weight(0.5),
            "embeds_2": (EMBEDS, {"tooltip": "Second embedding."}),
            "weight_2": weight(0.5),
        }, "optional": {
            "embeds_3": (EMBEDS, {"tooltip": "Optional third embedding."}),
            "weight_3": weight(0.0),
            "embeds_4": (EMBEDS, {"tooltip": "Optional fourth embedding."}),
            "weight_4": weight(0.0),
        }}

    @checked_node_function
    def mix(self, embeds_1, weight_1, embeds_2, weight_2, embeds_3=None, weight_3=0.0, embeds_4=None, weight_4=0.0):
        parts = [(as_image_embeds(e, f"embeds_{i}").float().cpu(), w)
                 for i, (e, w) in enumerate([(embeds_1, weight_1), (embeds_2, weight_2), (embeds_3, weight_3),
                                             (embeds_4, weight_4)], start=1) if e is not None]
        dim, batch = parts[0][0].shape[1], max(p.shape[0] for p, _ in parts)
        for i, (p, _) in enumerate(parts, start=1):
            require_embed_dim(p, dim, f"embeds_{i}", "embeds_1")
            require(p.shape[0] in (1, batch), f"embeds_{i} holds {p.shape[0]} embeddings; use 1 or {batch}.")
        return (_out(sum(w * p for p, w in parts).expand(batch, -1)),)


class FromClipVision:
    DESCRIPTION = ("Core's CLIP_VISION_OUTPUT (CLIP Vision Encode) as a Kandinsky 2.2 image embedding, for image "
                   "variations with stock nodes. The vision model must be ViT-bigG/14 with the 1280-d projection "
                   "(e.g. clip_vision_g.safetensors); the decoder refuses other widths.")
    CATEGORY = CATEGORY
    FUNCTION = "convert"
    RETURN_TYPES = (EMBEDS,)
    RETURN_NAMES = ("image_embeds",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_vision_output": ("CLIP_VISION_OUTPUT", {
            "tooltip": "The output of CLIP Vision Encode (its projected image_embeds are used)."})}}

    @checked_node_function
    def convert(self, clip_vision_output):
        embeds = as_image_embeds(clip_vision_output, "clip_vision_output")
        require_finite("clip_vision_output", embeds)
        return (_out(embeds),)


class Decoder:
    DESCRIPTION = ("Kandinsky 2.2 decoder: denoises MoVQ latents conditioned on the image embedding with "
                   "classifier-free guidance against the negative embedding (as diffusers' KandinskyV22Pipeline), "
                   "then decodes with MoVQ. For image variations with stock nodes, convert core's CLIP_VISION_OUTPUT "
                   "with 'Kandinsky 2.2 Embeds from CLIP Vision'. Width and height must be "
                   "multiples of 64 (refused otherwise, not rounded). Progress each step; a preview of the predicted "
                   "image every 'preview_every' steps (each costs a MoVQ decode).")
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("image", "frames")
    OUTPUT_TOOLTIPS = ("The decoded images.", "Predicted images kept every 'keep_frames_every' steps plus the final one.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "decoder": (DECODER, {"tooltip": "The Kandinsky 2.2 decoder."}),
            "image_embeds": (EMBEDS, {"tooltip": "What to draw: an image embedding from a prior, "
                                                 "Image Encode, a mix or From CLIP Vision."}),
            "negative_embeds": (EMBEDS, {"tooltip": "The unconditional embedding (Negative Embeds "
                                                    "'zero image' is the usual choice)."}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 1000,
                              "tooltip": "Denoising steps (ECLIPSE 50, diffusers default 100)."}),
            "guidance": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 30.0, "step": 0.1,
                                   "tooltip": "Classifier-free guidance scale; ≤ 1 disables guidance."}),
            "width": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64,
                              "tooltip": "Image width, a multiple of 64."}),
            "height": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64,
                               "tooltip": "Image height, a multiple of 64."}),
            "seed": SEED,
            "images_per_embed": ("INT", {"default": 1, "min": 1, "max": 64,
                                         "tooltip": "Images drawn for each embedding, in one batch."}),
            **MONITOR_INPUTS,
        }, **HIDDEN}

    @checked_node_function
    def decode(self, decoder, image_embeds, negative_embeds, steps, guidance, width, height, seed, images_per_embed,
               preview_every=5, keep_frames_every=0, unique_id=None):
        positive = as_image_embeds(image_embeds, "image_embeds")
        negative = as_image_embeds(negative_embeds, "negative_embeds")
        comfy.load_to_device(decoder.unet, decoder.movq)
        monitor = NodeMonitor(unique_id, steps, preview_every, keep_frames_every, label="decoder")
        images = decode_image_embeds(decoder, positive, negative, steps, guidance, width, height, seed,
                                     images_per_embed, preview_every, on_step=monitor)
        return {"ui": monitor.ui(), "result": (to_image_batch(images), monitor.frames())}


class ReferenceStatsBuild:
    DESCRIPTION = ("Reference statistics for OVI's constraints from real images: the image embeddings' mean, a "
                   "shrinkage covariance (invertible with few images) and the embeddings themselves for "
                   "nearest-neighbour search. Images come from a folder and/or an IMAGE batch. With a save_name the "
                   "result is written to models/ovi_reference/<save_name>.safetensors to reload with 'Load "
                   "Reference Statistics' instead of recomputing.")
    CATEGORY = CATEGORY
    FUNCTION = "build"
    RETURN_TYPES = (STATS, "INT")
    RETURN_NAMES = ("reference_stats", "count")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "encoders": (ENCODERS, {"tooltip": "The prior's encoders (use the same ones as the OVI node)."}),
            "folder": ("STRING", {"default": "", "tooltip": "A folder of images (.png .jpg .jpeg .webp .bmp) in "
                                                            "ComfyUI's input folder (e.g. 'cats' for input/cats); may "
                                                            "be empty when images are connected. Other roots: see "
                                                            "FUSEDREAM_EXTRA_ROOTS."}),
            "shrinkage": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                    "tooltip": "Weight of the scaled identity in the covariance; 0 = Ledoit–Wolf's "
                                               "automatic estimate."}),
            "save_name": ("STRING", {"default": "", "tooltip": "File name (without extension) to save under "
                                                               "models/ovi_reference; empty = do not save."}),
        }, "optional": {
            "images": ("IMAGE", {"tooltip": "Reference images (in addition to the folder's)."}),
        }, **HIDDEN}

    @checked_node_function
    def build(self, encoders, folder, shrinkage, save_name, images=None, unique_id=None):
        folder = folder.strip()
        require(bool(folder) or images is not None,
                "give a reference image folder or connect images; both are empty.")
        name = require_file_name(save_name, "save_name") if save_name.strip() else ""  # before any work
        source = comfy.resolve_input_folder(folder, "reference image folder") if folder else None
        comfy.load_to_device(encoders.image_encoder)
        parts = []
        if source is not None:
            files = image_files(source.path, comfy.folder_roots(source))
            bar = comfy.ProgressBar(1, None if unique_id is None else str(unique_id))

            def on_step(step):
                comfy.throw_if_interrupted()
                bar.update(step.step, step.total)

            parts.append(embed_image_files(files, encoders.encode_images, on_step=on_step,
                                           shrink_to=2 * encoders.image_size))
        if images is not None:
            with no_grad_normal_tensors():
                parts.append(encoders.encode_images(from_image_batch(images.clone())).cpu())
        stats = build_reference_stats(torch.cat(parts), None if shrinkage == 0 else shrinkage)
        if name:
            base = comfy.model_folder_paths(REFERENCE_FOLDER)[0]
            save_reference_stats(stats, os.path.join(base, name + ".safetensors"),
                                 source=source.shown if source is not None else "")
        return (stats, len(stats))


class ReferenceStatsLoad:
    DESCRIPTION = "Loads reference statistics saved by 'Build Reference Statistics' from models/ovi_reference."
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (STATS, "INT")
    RETURN_NAMES = ("reference_stats", "count")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"file": (comfy.list_model_entries(REFERENCE_FOLDER, want_dirs=False,
                                                              extensions=(".safetensors",)),
                                      {"tooltip": "A statistics file in models/ovi_reference."})}}

    @checked_loader_function
    def load(self, file):
        stats = load_reference_stats(comfy.resolve_model_entry(REFERENCE_FOLDER, file),
                                     comfy.model_roots(REFERENCE_FOLDER))
        return (stats, len(stats))


NODE_CLASS_MAPPINGS = {
    "FuseDreamKandinsky22EncodersLoader": EncodersLoader,
    "FuseDreamKandinsky22EncodersFromFiles": EncodersFromFiles,
    "FuseDreamKandinsky22DecoderLoader": DecoderLoader,
    "FuseDreamKandinsky22TextEncode": TextEncode,
    "FuseDreamOVIPrior": OVIPrior,
    "FuseDreamKandinsky22TextEmbPrior": TextEmbPrior,
    "FuseDreamKandinsky22TrainedPrior": TrainedPrior,
    "FuseDreamKandinsky22NegativeEmbeds": NegativeEmbeds,
    "FuseDreamKandinsky22ImageEncode": ImageEncode,
    "FuseDreamKandinsky22EmbedsMix": EmbedsMix,
    "FuseDreamKandinsky22FromCLIPVision": FromClipVision,
    "FuseDreamKandinsky22Decoder": Decoder,
    "FuseDreamOVIReferenceStatsBuild": ReferenceStatsBuild,
    "FuseDreamOVIReferenceStatsLoad": ReferenceStatsLoad,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FuseDreamKandinsky22EncodersLoader": "Kandinsky 2.2 Prior Encoders Loader (FuseDream)",
    "FuseDreamKandinsky22EncodersFromFiles": "Kandinsky 2.2 Prior Encoders from Single Files (FuseDream)",
    "FuseDreamKandinsky22DecoderLoader": "Kandinsky 2.2 Decoder Loader (FuseDream)",
    "FuseDreamKandinsky22TextEncode": "Kandinsky 2.2 Text Encode (FuseDream)",
    "FuseDreamOVIPrior": "OVI Prior (FuseDream)",
    "FuseDreamKandinsky22TextEmbPrior": "TextEmb Prior (FuseDream)",
    "FuseDreamKandinsky22TrainedPrior": "Kandinsky 2.2 Trained Prior (FuseDream)",
    "FuseDreamKandinsky22NegativeEmbeds": "Kandinsky 2.2 Negative Embeds (FuseDream)",
    "FuseDreamKandinsky22ImageEncode": "Kandinsky 2.2 Image Encode (FuseDream)",
    "FuseDreamKandinsky22EmbedsMix": "Kandinsky 2.2 Embeds Mix (FuseDream)",
    "FuseDreamKandinsky22FromCLIPVision": "Kandinsky 2.2 Embeds from CLIP Vision (FuseDream)",
    "FuseDreamKandinsky22Decoder": "Kandinsky 2.2 Decoder (FuseDream)",
    "FuseDreamOVIReferenceStatsBuild": "OVI Build Reference Statistics (FuseDream)",
    "FuseDreamOVIReferenceStatsLoad": "OVI Load Reference Statistics (FuseDream)",
}
