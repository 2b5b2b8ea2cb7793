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
from ..fusedream_ops.ovi.optimize import TOKEN_ENTRIES, optimize_ovi
from ..fusedream_ops.ovi.reference_stats import (build_reference_stats, embed_image_files, image_files,
                                                 load_reference_stats, save_reference_stats)
from ..fusedream_ops.validation.names import require_file_name
from ..fusedream_ops.validation.ranges import OVI
from . import comfy
from .kandinsky import CATEGORY, EMBEDS, ENCODERS, KANDINSKY_FOLDER, TEXT, node_embeds
from .monitor import MONITOR_INPUTS, NodeMonitor, cancel_and_progress
from .node_inputs import checked_loader_function, checked_node_function
from .node_schema import FuseDreamNode
from .widgets import model_files, ranged, seed_input

REFERENCE_FOLDER = "ovi_reference"
comfy.register_model_folder(REFERENCE_FOLDER, (".safetensors",))

STATS = "OVI_REFERENCE_STATS"
SEED = seed_input()


class OVIPrior(FuseDreamNode, category=CATEGORY):
    """OVI (Optimization-based Visual Inversion): a training-free prior. Random pseudo-tokens go through the
    prior's CLIP vision tower and are optimized (AdamW, weight decay 0.01) so the projected image embedding's
    cosine similarity to the text embedding rises; the best iterate comes out, unnormalized like a trained
    prior's. Choices where the paper is silent: tokens enter as patch embeddings (class token prepended, position
    embeddings added, class output pooled; 'bare' = tokens alone) and start at N(0, σ²) with σ the RMS of the
    position embeddings, lr is in units of σ; loss = (1 − cos) + λ_M·sqrt((e−μ)ᵀΣ⁻¹(e−μ)) + λ_N·(1 − cos to the
    nearest reference). λ_M/λ_N need reference statistics. No image exists while optimizing, so the chart shows
    the cosine and 'frames' is a 1×1 placeholder."""
    OUTPUTS = {"image_embeds": (EMBEDS, "The optimized image embedding (best iterate)."),
               "cosine": ("FLOAT", "Its cosine similarity to the text embedding."),
               "history": ("STRING", 'The similarity history as JSON: {"best_step": n, "cosine": [...], ...} one '
                                     'value per step.'),
               "frames": ("IMAGE", "Placeholder (an embedding has no image): a 1×1 black frame.")}
    INPUTS = {
        "encoders": (ENCODERS, {"tooltip": "The prior's encoders (the image tower is what OVI optimizes through)."}),
        "text": (TEXT, {"tooltip": "The prompt's text embedding (target of the cosine similarity)."}),
        "num_tokens": ranged(OVI["num_tokens"], 1, "Pseudo-tokens (paper: 1 to 6). More tokens reach a higher "
                                                   "similarity plateau and look more like TextEmb."),
        "steps": ranged(OVI["steps"], 500, "Optimization steps (paper: 500 to 1000)."),
        "lr": ranged(OVI["lr"], 0.1, "AdamW learning rate, in units of the position embeddings' scale.", step=0.001,
                     round=False),
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
    }
    OPTIONAL = {
        "reference_stats": (STATS, {"tooltip": "Real-image statistics for the λ_M / λ_N constraints."}),
    }

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


class TextEmbPrior(FuseDreamNode, category=CATEGORY):
    """TextEmb, the paper's baseline prior: the projected text embedding used directly as the image embedding.
    Scores high on T2I-CompBench++ but looks worse than OVI with constraints."""
    OUTPUTS = {"image_embeds": EMBEDS}
    INPUTS = {
        "text": (TEXT, {"tooltip": "A text embedding (e.g. the prompt or the negative prompt)."}),
    }

    @checked_node_function
    def convert(self, text):
        return (node_embeds(text_as_image_embeds(text)),)


class TrainedPrior(FuseDreamNode, category=CATEGORY):
    """Kandinsky 2.2's trained diffusion prior (diffusers KandinskyV22PriorPipeline) on the prior folder's prior/
    and scheduler/ weights, for comparison with OVI on the same seed. The negative output is the prior's
    embedding of the negative text, or the zero-image embedding without one."""
    OUTPUTS = {"image_embeds": EMBEDS, "negative_embeds": EMBEDS}
    INPUTS = {
        "encoders": (ENCODERS, {"tooltip": "The prior's encoders; the prior weights are read from the same folder "
                                           "(prior/ and scheduler/)."}),
        "text": (TEXT, {"tooltip": "The prompt (its text is re-encoded by the pipeline)."}),
        "steps": ("INT", {"default": 25, "min": 2, "max": 1000,
                          "tooltip": "Prior denoising steps (diffusers 25; the UnCLIP scheduler needs at least 2)."}),
        "guidance": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 30.0, "step": 0.1,
                               "tooltip": "Classifier-free guidance scale of the prior (diffusers 4.0)."}),
        "seed": SEED,
    }
    OPTIONAL = {
        "negative_text": (TEXT, {"tooltip": "Negative prompt for the prior's unconditional branch."}),
    }

    @checked_node_function
    def run(self, encoders, text, steps, guidance, seed, negative_text=None, unique_id=None):
        dtype = next(encoders.image_encoder.parameters()).dtype
        cached = getattr(self, "_prior", None)
        if cached is None or cached[0] != (encoders.folder, dtype):
            self._prior = cached = ((encoders.folder, dtype), load_trained_prior(encoders.folder, dtype,
                                                                                 comfy.model_roots(KANDINSKY_FOLDER)))
        prior = cached[1]
        comfy.load_to_device(prior.prior, encoders.text_encoder, encoders.image_encoder)
        negative = negative_text.prompts[0] if negative_text is not None else None
        embeds, negative_embeds = run_trained_prior(encoders, prior, text.prompts, negative, steps, guidance, seed,
                                                    on_step=cancel_and_progress(unique_id, steps))
        return (node_embeds(embeds), node_embeds(negative_embeds))


class ReferenceStatsBuild(FuseDreamNode, category=CATEGORY):
    """Reference statistics for OVI's constraints from real images: the image embeddings' mean, a shrinkage
    covariance (invertible with few images) and the embeddings themselves for nearest-neighbour search. Images
    come from a folder and/or an IMAGE batch. With a save_name the result is written to
    models/ovi_reference/<save_name>.safetensors to reload with 'Load Reference Statistics' instead of
    recomputing."""
    OUTPUTS = {"reference_stats": STATS, "count": "INT"}
    INPUTS = {
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
    }
    OPTIONAL = {
        "images": ("IMAGE", {"tooltip": "Reference images (in addition to the folder's)."}),
    }

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
            parts.append(embed_image_files(files, encoders.encode_images, on_step=cancel_and_progress(unique_id),
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


class ReferenceStatsLoad(FuseDreamNode, category=CATEGORY):
    """Loads reference statistics saved by 'Build Reference Statistics' from models/ovi_reference."""
    OUTPUTS = {"reference_stats": STATS, "count": "INT"}
    INPUTS = {
        "file": (model_files(REFERENCE_FOLDER, (".safetensors",)),
                 {"tooltip": "A statistics file in models/ovi_reference."}),
    }

    @checked_loader_function
    def load(self, file):
        stats = comfy.load_model_entry(load_reference_stats, REFERENCE_FOLDER, file)
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
