"""Scoring nodes: rank any IMAGE batch (a KSampler's, Load Image's, a video's frames) by an AugCLIP objective, and
ComfyUI's own CLIP_VISION model as a scorer's image tower."""
from __future__ import annotations

import functools

from ..fusedream_ops.core.autograd import no_grad_normal_tensors
from ..fusedream_ops.core.images import from_image_batch, to_image_batch
from ..fusedream_ops.fusedream.ranking import rank_images
from ..fusedream_ops.models.clip import load_clip
from ..fusedream_ops.models.clip_vision_tower import VisionTowerScorer, hf_tower_shape, require_same_clip
from . import comfy
from .fusedream import CLIP_FOLDER, clip_file_inputs
from .monitor import cancel_and_progress
from .node_inputs import checked_loader_function, checked_node_function
from .node_schema import FuseDreamNode
from .widgets import PRECISION, seed_input

SEED = seed_input("the augmentations; every image sees the same ones")


def ranking_text(scores, order) -> str:
    """One line per image, best first: rank, input index (0-based) and score."""
    return "\n".join(f"{rank}. #{int(i)}  {float(scores[i]):.4f}" for rank, i in enumerate(order.tolist(), start=1))


class RankImages(FuseDreamNode, category="FuseDream/objective", output_node=True):
    """Scores every image of an IMAGE batch from anywhere (KSampler + VAE Decode, Load Image, video frames,
    FuseDream or CLIPAG outputs) with an AugCLIP objective (plain or CLIPAG CLIP, weighted and negative prompts)
    and returns them sorted best first, the scores (a FLOAT list and text on the node) and the top n. Every image
    sees the same seeded augmentations; images are scored in chunks, so large batches need bounded memory; Cancel
    stops between chunks."""
    OUTPUTS = {"ranked": ("IMAGE", "Every image, best first."),
               "top": ("IMAGE", "The n best images, best first."),
               "scores": ("FLOAT", "The scores, best first (a list: nodes downstream run once per score)."),
               "indices": ("INT", "The input position (0-based) of each ranked image, best first (a list)."),
               "text": ("STRING", "One line per image: rank, input position, score.")}
    OUTPUT_IS_LIST = (False, False, True, True, False)
    INPUTS = {
        "image": ("IMAGE", {"tooltip": "The images to rank (any size; alpha is ignored)."}),
        "objective": ("FUSEDREAM_OBJECTIVE", {"tooltip": "What to score them with: AugCLIP Objective (its "
                                                         "prompts, weights, copies and augmentations)."}),
        "top_n": ("INT", {"default": 4, "min": 1, "max": 4096,
                          "tooltip": "How many of the best images the 'top' output holds (at most the batch)."}),
        "draws": ("INT", {"default": 4, "min": 1, "max": 1000,
                          "tooltip": "Batches of augmented copies averaged per image (more: steadier scores)."}),
        "seed": SEED,
        "augment": ("BOOLEAN", {"default": True,
                                "tooltip": "Score with AugCLIP (the objective's augmentations); off: plain CLIP "
                                           "cosine of each image as it is."}),
        "chunk": ("INT", {"default": 0, "min": 0, "max": 4096, "advanced": True,
                          "tooltip": "Images scored at once; bounds the memory. 0: from the free memory (at "
                                     "most 512 views per CLIP batch)."}),
    }

    @checked_node_function
    def rank(self, image, objective, top_n, draws, seed, augment, chunk, unique_id=None):
        comfy.load_to_device(objective.scorer.model)
        images = from_image_batch(image)
        comfy.throw_if_interrupted()
        ranking = rank_images(objective, images, draws, seed, augment, chunk, on_step=cancel_and_progress(unique_id))
        with no_grad_normal_tensors():
            ranked = to_image_batch(images[ranking.order])
        ordered = ranking.scores[ranking.order]
        text = ranking_text(ranking.scores, ranking.order)
        return {"ui": {"text": [text]},
                "result": (ranked, ranked[:top_n], [float(s) for s in ordered],
                           [int(i) for i in ranking.order], text)}


class CLIPVisionScorer(FuseDreamNode, category="FuseDream/loaders"):
    """A CLIP scorer from ComfyUI's own CLIP_VISION model (Load CLIP Vision) for the image side and the pack's
    open_clip file of the same CLIP for the text side: e.g. clip_vision_h.safetensors with laion's ViT-H-14
    open_clip_pytorch_model.bin. The two must be one trained CLIP (same architecture and weights), else a clear
    error names both; SigLIP and DINOv2 CLIP_VISION files cannot score. ComfyUI manages the image tower's memory;
    the open_clip image tower is dropped after the check."""
    OUTPUTS = {"clip": "FUSEDREAM_CLIP"}
    INPUTS = {
        **clip_file_inputs("open_clip architecture of the text side's file ('auto' detects it; choose a "
                           "-quickgelu one for OpenAI-trained weights).",
                           "The open_clip file of the same CLIP in models/open_clip (its text tower is used, its "
                           "image tower only checked)."),
        "precision": PRECISION,
        "clip_vision": ("CLIP_VISION", {"tooltip": "From Load CLIP Vision: a CLIP ViT (clip_vision_h, "
                                                   "clip_vision_g, OpenAI ViT-L/14)."}),
    }

    @checked_loader_function
    def build(self, architecture, checkpoint, precision, clip_vision=None):
        tower = comfy.clip_vision_tower(clip_vision)
        hf_tower_shape(tower.state, tower.heads, tower.activation, "the CLIP_VISION model connected to clip_vision")
        text = comfy.load_model_entry(functools.partial(load_clip, architecture), CLIP_FOLDER, checkpoint,
                                      comfy.weight_dtype(precision, "text_encoder"))  # after the cheap refusal above
        require_same_clip(tower.state, tower.heads, tower.activation, text, "connected to clip_vision", checkpoint)
        return (VisionTowerScorer(text, tower.forward, tower.device, tower.image_size, tower.mean, tower.std,
                                  f"{text.name} (image tower: CLIP_VISION)", before_images=tower.load),)


NODE_CLASS_MAPPINGS = {
    "FuseDreamRankImages": RankImages,
    "FuseDreamCLIPVisionScorer": CLIPVisionScorer,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FuseDreamRankImages": "Rank Images by AugCLIP (FuseDream)",
    "FuseDreamCLIPVisionScorer": "CLIP Scorer from CLIP Vision (FuseDream)",
}
