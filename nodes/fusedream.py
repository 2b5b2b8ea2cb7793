"""FuseDream single-image nodes: loaders, latent sampler, AugCLIP objective, top-k init, basis optimizer, decode."""
from __future__ import annotations

import functools

import torch

from ..fusedream_ops.core.autograd import no_grad_normal_tensors
from ..fusedream_ops.core.errors import require
from ..fusedream_ops.core.images import from_image_batch, to_image_batch
from ..fusedream_ops.core.precision import AUTO as AUTO_PRECISION
from ..fusedream_ops.core.precision import PRECISIONS
from ..fusedream_ops.fusedream.augment import AugmentPolicy
from ..fusedream_ops.fusedream.latents import Z_MODES, BigGANLatent, sample_latents
from ..fusedream_ops.fusedream.objective import AugClipObjective, parse_prompts
from ..fusedream_ops.fusedream.optimize import Problem, optimize_bases
from ..fusedream_ops.fusedream.topk import chunk_for_memory, free_memory, topk_latents
from ..fusedream_ops.models.biggan import load_biggan
from ..fusedream_ops.models.clip import AUTO, load_clip
from ..fusedream_ops.models.imagenet_classes import parse_class_list
from ..fusedream_ops.validation.ranges import FUSEDREAM
from ..fusedream_ops.validation.prompts import SYNTAX, truncation_warnings
from . import comfy
from .monitor import MONITOR_INPUTS, NodeMonitor
from .node_inputs import checked_loader_function, checked_node_function
from .node_schema import FuseDreamNode
from .widgets import BASIS_MODE, LATENT_NOISE, OPTIMIZE_Y, PRECISION, model_files, ranged, seed_input

BIGGAN_FOLDER = "biggan"
CLIP_FOLDER = "open_clip"
CHECKPOINT_EXTENSIONS = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
comfy.register_model_folder(BIGGAN_FOLDER, CHECKPOINT_EXTENSIONS)
comfy.register_model_folder(CLIP_FOLDER, CHECKPOINT_EXTENSIONS)

SEED = seed_input()
GENERATOR = ("BIGGAN", {"tooltip": "The BigGAN generator."})


def _biggan_entries() -> list[str]:
    folders = comfy.list_model_entries(BIGGAN_FOLDER, want_dirs=True)
    files = comfy.list_model_entries(BIGGAN_FOLDER, want_dirs=False, extensions=(".safetensors",))
    return folders + files


def _clip_architectures() -> list[str]:
    import open_clip

    return [AUTO] + open_clip.list_models()


def clip_file_inputs(architecture_tip: str, checkpoint_tip: str) -> dict:
    """The two widgets that name an open_clip file: its architecture ('auto' detects it) and the checkpoint."""
    return {"architecture": (_clip_architectures, {"default": AUTO, "tooltip": architecture_tip}),
            "checkpoint": (model_files(CLIP_FOLDER, CHECKPOINT_EXTENSIONS), {"tooltip": checkpoint_tip})}


def switch(tooltip: str) -> tuple:
    """A BOOLEAN widget that starts on."""
    return ("BOOLEAN", {"default": True, "tooltip": tooltip})


class BigGANLoader(FuseDreamNode, category="FuseDream/loaders"):
    """Loads a BigGAN-deep generator (pytorch-pretrained-biggan) from models/biggan: a folder with config.json +
    pytorch_model.bin or model.safetensors, or a single .safetensors file. Every missing or unexpected weight is
    an error."""
    OUTPUTS = {"generator": "BIGGAN"}
    INPUTS = {
        "checkpoint": (_biggan_entries, {
            "tooltip": "A BigGAN-deep checkpoint folder (or .safetensors file) in models/biggan."}),
        "precision": PRECISION,
    }

    @checked_loader_function
    def load(self, checkpoint, precision=AUTO_PRECISION):
        return (comfy.load_model_entry(load_biggan, BIGGAN_FOLDER, checkpoint, comfy.weight_dtype(precision, "vae")),)


class CLIPLoader(FuseDreamNode, category="FuseDream/loaders"):
    """Loads an open_clip model as a frozen scorer for the CLIP-guided nodes. 'auto' reads the architecture from
    a .json beside the checkpoint or recognises it from the tensor shapes; a checkpoint that does not fit the
    architecture is an error naming what does fit. Training checkpoints (e.g. CLIPAG_ViTB32.pt) load too."""
    OUTPUTS = {"clip": "FUSEDREAM_CLIP"}
    INPUTS = {
        **clip_file_inputs("open_clip architecture. 'auto' detects it (GELU before QuickGELU: choose "
                           "ViT-B-32-quickgelu for OpenAI-trained weights).",
                           "An open_clip checkpoint in models/open_clip (.safetensors, .pt, .bin)."),
        "precision": PRECISION,
    }

    @checked_loader_function
    def load(self, architecture, checkpoint, precision=AUTO_PRECISION):
        return (comfy.load_model_entry(functools.partial(load_clip, architecture), CLIP_FOLDER, checkpoint,
                                       comfy.weight_dtype(precision, "text_encoder")),)


class LatentSampler(FuseDreamNode, category="FuseDream/latent"):
    """Draws M random BigGAN latents: z ~ N(0, I) clamped to [-2, 2] (official FuseDream) or truncated normal,
    and y = the class embedding of a random class (all classes or the listed ones)."""
    OUTPUTS = {"candidates": "BIGGAN_LATENT"}
    INPUTS = {
        "generator": ("BIGGAN", {"tooltip": "The generator whose class embeddings initialise y."}),
        "candidates": ranged(FUSEDREAM["candidates"], 10000,
                             "M, the number of random latents (the paper uses 10,000)."),
        "seed": SEED,
        "z_mode": (list(Z_MODES), {"default": "clamp",
                                   "tooltip": "clamp: N(0,1) clamped to [-2,2] like the official code; "
                                              "truncated_normal: values outside [-2,2] are redrawn."}),
        "truncation": ("FLOAT", {"default": 1.0, "min": 0.02, "max": 1.0, "step": 0.02,
                                 "tooltip": "BigGAN truncation: scales z and selects the batch-norm statistics."}),
        "classes": ("STRING", {"default": "", "multiline": False,
                               "tooltip": "Optional comma-separated class names or indices to draw y from "
                                          "(e.g. 'golden retriever, 281'); empty = all classes."}),
    }

    @checked_node_function
    def sample(self, generator, candidates, seed, z_mode, truncation, classes):
        indices = parse_class_list(classes, generator.class_names, generator.num_classes)
        return (sample_latents(generator, candidates, seed, z_mode, truncation, indices),)


class AugCLIPObjectiveNode(FuseDreamNode, category="FuseDream/objective"):
    """The AugCLIP score (FuseDream eq. 3): CLIP cosine to the prompt averaged over random DiffAugment copies of
    the image. One prompt per line; end a line with ':weight' to weight it, a negative weight makes it a negative
    prompt. Text is encoded once here."""
    OUTPUTS = {"objective": "FUSEDREAM_OBJECTIVE"}
    INPUTS = {
        "clip": ("FUSEDREAM_CLIP", {"tooltip": "The CLIP scorer (any open_clip model, e.g. CLIPAG)."}),
        "prompt": ("STRING", {"default": "a photo of a blue dog", "multiline": True, "tooltip": SYNTAX}),
        "copies": ranged(FUSEDREAM["copies"], 50,
                         "Augmented copies per image per step (official: 50), one CLIP batch."),
        "color": switch("Random brightness ±0.5, saturation ×U(0,2), contrast ×U(0.5,1.5)."),
        "translation": switch("Random integer shift up to 1/8 of the size, grey padding."),
        "resize": switch("Random zoom ×U(0.8,1.2), shrunk images padded grey, enlarged ones centre-cropped."),
        "cutout": switch("Erase a random square of half the image side."),
    }

    @checked_node_function
    def build(self, clip, prompt, copies, color, translation, resize, cutout):
        prompts = parse_prompts(prompt)
        comfy.warn(truncation_warnings([t for t, _ in prompts], clip.tokenizer))
        policy = AugmentPolicy(color=color, translation=translation, resize=resize, cutout=cutout)
        return (AugClipObjective(clip, prompts, policy, copies),)


class TopKInit(FuseDreamNode, category="FuseDream/latent"):
    """FuseDream initialisation: generates and scores every candidate (in chunks, without gradients) and keeps
    the k best as the basis for the optimizer. Memory is bounded by the chunk size, so M = 10,000 is fine."""
    OUTPUTS = {"basis": ("BIGGAN_LATENT", "The k best latents, best first."),
               "scores": ("STRING", "Their scores.")}
    INPUTS = {
        "generator": GENERATOR,
        "candidates": ("BIGGAN_LATENT", {"tooltip": "The M random latents from the latent sampler."}),
        "objective": ("FUSEDREAM_OBJECTIVE", {"tooltip": "How candidates are scored."}),
        "k": ranged(FUSEDREAM["k"], 5, "How many of the best candidates to keep (official 5, paper k ≤ 15)."),
        "augment": ("BOOLEAN", {"default": False,
                                "tooltip": "Score with AugCLIP (slower) instead of plain CLIP like the "
                                           "official code."}),
        "chunk": ranged(FUSEDREAM["chunk"], 0, "Candidates generated and scored at once; bounds the memory. 0: as many "
                                               "as half the free memory holds (at most 64).", advanced=True),
        "seed": SEED,
        "precision": (list(PRECISIONS), {
            "default": AUTO_PRECISION, "advanced": True,
            "tooltip": "Precision of the models while scoring candidates (copies in that precision for the "
                       "duration of the node; the selection is the same as fp32 up to near-ties). auto: "
                       "ComfyUI's choice for the device, outside it bf16/fp16 where the device is fast at it."}),
    }

    @checked_node_function
    def select(self, generator, candidates, objective, k, augment, chunk, seed, precision=AUTO_PRECISION,
               unique_id=None):
        device = comfy.load_to_device(generator.model, objective.scorer.model)
        generator_dtype = comfy.weight_dtype(precision, "vae")
        chunk = chunk or chunk_for_memory(generator, free_memory(device), generator_dtype.itemsize)
        total = (len(candidates) + chunk - 1) // chunk
        monitor = NodeMonitor(unique_id, total, preview_every=max(1, total // 20), label="top-k")
        basis, scores = topk_latents(generator, candidates, objective, k, chunk, augment, seed=seed,
                                     on_step=monitor, generator_dtype=generator_dtype,
                                     scorer_dtype=comfy.weight_dtype(precision, "text_encoder"))
        text = ", ".join(f"{s:.4f}" for s in scores.tolist())
        return {"ui": {"text": [text], **monitor.ui()}, "result": (basis, text)}


class BasisOptimizer(FuseDreamNode, category="FuseDream/optimize"):
    """FuseDream optimisation (eq. 4): maximises AugCLIP over ξ = Σ w_i ξ_i, learning the basis latents and their
    weights with Adam. 'paper': one scalar weight per basis vector (1/k); 'official': the released code's
    per-element softmax weights. Returns the best iterate, with a live preview, progress and Cancel every step."""
    OUTPUTS = {"latent": ("BIGGAN_LATENT", "The best latent (one per run of the batch)."),
               "image": ("IMAGE", "Its image (one per run)."),
               "score": ("FLOAT", "Its AugCLIP score, re-measured over fresh views (the highest of the batch)."),
               "frames": ("IMAGE", "Frames kept every 'keep_frames_every' steps plus the final one (the leading "
                                   "run's).")}
    INPUTS = {
        "generator": GENERATOR,
        "basis": ("BIGGAN_LATENT", {"tooltip": "The basis latents (e.g. from Top-k init)."}),
        "objective": ("FUSEDREAM_OBJECTIVE", {"tooltip": "What to maximise."}),
        "steps": ranged(FUSEDREAM["steps"], 1000, "Adam steps (official 1000)."),
        "lr": ranged(FUSEDREAM["lr"], 5e-3, "Adam learning rate (official 5e-3).", step=1e-4, round=False),
        "mode": BASIS_MODE,
        "latent_noise": LATENT_NOISE,
        "optimize_y": OPTIMIZE_Y,
        "seed": SEED,
        "batch": ("INT", {"default": 1, "min": 1, "max": 64,
                          "tooltip": "Independent runs from this basis with seeds seed, seed+1, …, optimised "
                                     "together in one batched forward/backward per step (fills a GPU); each "
                                     "gives the image its own seed would give alone."}),
        **MONITOR_INPUTS,
    }

    @checked_node_function
    def optimize(self, generator, basis, objective, steps, lr, mode, latent_noise, optimize_y, seed, batch=1,
                 preview_every=5, keep_frames_every=0, unique_id=None):
        comfy.load_to_device(generator.model, objective.scorer.model)
        monitor = NodeMonitor(unique_id, steps, preview_every, keep_frames_every)
        problems = [Problem(basis, objective, (seed + i) % 2**64) for i in range(batch)]
        results = optimize_bases(generator, problems, steps, lr, mode, latent_noise, optimize_y, on_step=monitor)
        latent = BigGANLatent.cat([r.latent for r in results])
        images = torch.cat([r.image for r in results])
        return {"ui": monitor.ui(),
                "result": (latent, to_image_batch(images), max(r.best_score for r in results), monitor.frames())}


class Decode(FuseDreamNode, category="FuseDream/latent"):
    """Renders BigGAN latents as images (tanh output mapped linearly to 0..1)."""
    OUTPUTS = {"image": "IMAGE"}
    INPUTS = {
        "generator": GENERATOR,
        "latent": ("BIGGAN_LATENT", {"tooltip": "One or more latents."}),
    }

    @checked_node_function
    def decode(self, generator, latent: BigGANLatent):
        require(len(latent) >= 1, "latent holds no latents: connect a sampler, Top-k or optimizer output.")
        comfy.load_to_device(generator.model)
        with no_grad_normal_tensors():
            images = [generator.decode(latent.select(slice(i, i + 16))).cpu() for i in range(0, len(latent), 16)]
        return (to_image_batch(torch.cat(images)),)


class AugCLIPScore(FuseDreamNode, category="FuseDream/objective", output_node=True):
    """Scores images with an objective, averaged over many augmentation draws, e.g. to rank seeds. The FLOAT is
    the batch mean; every image's score is shown on the node."""
    OUTPUTS = {"score": "FLOAT", "scores": "STRING"}
    INPUTS = {
        "image": ("IMAGE", {"tooltip": "Images to score."}),
        "objective": ("FUSEDREAM_OBJECTIVE", {"tooltip": "The objective to score them with."}),
        "draws": ("INT", {"default": 20, "min": 1, "max": 1000,
                          "tooltip": "Independent batches of augmented copies averaged (official 20)."}),
        "seed": SEED,
    }

    @checked_node_function
    def score(self, image, objective, draws, seed):
        comfy.load_to_device(objective.scorer.model)
        with no_grad_normal_tensors():
            x = from_image_batch(image.clone()).to(objective.scorer.device)
            scores = objective.mean_score(x, draws, seed).cpu()
        text = ", ".join(f"{s:.4f}" for s in scores.tolist())
        return {"ui": {"text": [text]}, "result": (float(scores.mean()), text)}


NODE_CLASS_MAPPINGS = {
    "FuseDreamBigGANLoader": BigGANLoader,
    "FuseDreamCLIPLoader": CLIPLoader,
    "FuseDreamLatentSampler": LatentSampler,
    "FuseDreamAugCLIPObjective": AugCLIPObjectiveNode,
    "FuseDreamTopK": TopKInit,
    "FuseDreamBasisOptimizer": BasisOptimizer,
    "FuseDreamDecode": Decode,
    "FuseDreamAugCLIPScore": AugCLIPScore,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FuseDreamBigGANLoader": "BigGAN Loader (FuseDream)",
    "FuseDreamCLIPLoader": "CLIP Loader (FuseDream)",
    "FuseDreamLatentSampler": "BigGAN Latent Sampler (FuseDream)",
    "FuseDreamAugCLIPObjective": "AugCLIP Objective (FuseDream)",
    "FuseDreamTopK": "Top-k Init (FuseDream)",
    "FuseDreamBasisOptimizer": "Basis Optimizer (FuseDream)",
    "FuseDreamDecode": "BigGAN Decode (FuseDream)",
    "FuseDreamAugCLIPScore": "AugCLIP Score (FuseDream)",
}
