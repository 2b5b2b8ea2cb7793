"""OVI and the other priors: Kandinsky 2.2 text embedding -> image embedding, and OVI's reference statistics.

OVI (Dell'Erba & Bagdanov) optimises pseudo-tokens through the prior's CLIP image tower towards the text embedding,
under Mahalanobis / nearest-neighbour constraints from real-image statistics; TextEmb and the trained diffusion prior
are the baselines it is compared with. Reference statistics files live in ``models/ovi_reference/`` (.safetensors).
"""
from __future__ import annotations

import json
import os

import torch

from ..fusedream_ops.core.autograd import no_grad_normal_tensors
from ..fusedream_ops.core.errors import require
from ..fusedream_ops.core.images import from_image_batch
from ..fusedream_ops.models.kandinsky import load_trained_prior
from ..fusedream_ops.ovi.baselines import run_trained_prior, text_as_image_embeds
from ..fusedream_ops.ovi.optimize import MAX_TOKENS, TOKEN_ENTRIES, optimize_ovi
from ..fusedream_ops.ovi.reference_stats import (build_reference_stats, embed_image_files, image_files,
                                                 load_reference_stats, save_reference_stats)
from ..fusedream_ops.validation.names import require_file_name
from . import comfy
from .kandinsky import CATEGORY, EMBEDS, ENCODERS, KANDINSKY_FOLDER, TEXT, node_embeds
from .monitor import MONITOR_INPUTS, NodeMonitor
from .node_inputs import checked_loader_function, checked_node_function
from .widgets import HIDDEN, seed_input

REFERENCE_FOLDER = "ovi_reference"
comfy.register_model_folder(REFERENCE_FOLDER, (".safetensors",))

STATS = "OVI_REFERENCE_STATS"
SEED = seed_input()


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
                "result": (node_embeds(result.image_embeds), result.best_cosine, history, monitor.frames())}


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
        return (node_embeds(text_as_image_embeds(text)),)


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
        return (node_embeds(embeds), node_embeds(negative_embeds))



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
    "FuseDreamOVIPrior": OVIPrior,
    "FuseDreamKandinsky22TextEmbPrior": TextEmbPrior,
    "FuseDreamKandinsky22TrainedPrior": TrainedPrior,
    "FuseDreamOVIReferenceStatsBuild": ReferenceStatsBuild,
    "FuseDreamOVIReferenceStatsLoad": ReferenceStatsLoad,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FuseDreamOVIPrior": "OVI Prior (FuseDream)",
    "FuseDreamKandinsky22TextEmbPrior": "TextEmb Prior (FuseDream)",
    "FuseDreamKandinsky22TrainedPrior": "Kandinsky 2.2 Trained Prior (FuseDream)",
    "FuseDreamOVIReferenceStatsBuild": "OVI Build Reference Statistics (FuseDream)",
    "FuseDreamOVIReferenceStatsLoad": "OVI Load Reference Statistics (FuseDream)",
}
