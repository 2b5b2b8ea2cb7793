"""CLIPAG nodes: generator-free text-to-image (optimise pixels under a CLIP scorer) and its reference-image init."""
from __future__ import annotations

import torch

from ..fusedream_ops.clipag.init_images import (SMALL_SIZE, SmallImageGaussians, best_gaussian_samples, best_matches,
                                                flat_images, load_reference_groups, noise_images, parse_color,
                                                square_resize)
from ..fusedream_ops.clipag.synthesis import PixelSynthesisSettings, synthesize_pixels
from ..fusedream_ops.core.autograd import grad_enabled, no_grad_normal_tensors, ordinary
from ..fusedream_ops.core.errors import require
from ..fusedream_ops.core.images import from_image_batch, to_image_batch
from ..fusedream_ops.fusedream.augment import AugmentPolicy
from ..fusedream_ops.fusedream.objective import AugClipObjective, parse_prompts
from ..fusedream_ops.validation import ranges
from ..fusedream_ops.validation.prompts import SYNTAX, truncation_warnings
from . import comfy
from .monitor import MONITOR_INPUTS, NodeMonitor, cancel_and_progress
from .node_inputs import checked_node_function
from .node_schema import FuseDreamNode
from .widgets import ranged, seed_input

INIT_MODES = ("noise", "color", "image", "gaussian")
RECIPE = PixelSynthesisSettings()
"""The authors' recipe, the widgets' defaults."""
R = ranges.CLIPAG_SYNTHESIS
SEED = seed_input("init noise, crops, augmentations")


class ReferenceImageGaussian(FuseDreamNode, category="FuseDream/CLIPAG"):
    """CLIPAG's init model: shrinks a folder of reference images to 16×16 and fits one full-covariance Gaussian
    per class (per sub-folder, or the whole folder as one class). The synthesis node samples it and starts from
    the sample CLIP likes best. Cached while the folder setting is unchanged."""
    OUTPUTS = {"gaussian": "CLIPAG_IMAGE_GAUSSIAN"}
    INPUTS = {
        "folder": ("STRING", {"default": "", "tooltip": "A folder of images in ComfyUI's input folder (e.g. "
                                                        "'tiny-imagenet' for input/tiny-imagenet): one sub-folder "
                                                        "per class, or images directly inside; at least 2 images "
                                                        "per class. Other roots: see FUSEDREAM_EXTRA_ROOTS."}),
        "small_size": ("INT", {"default": SMALL_SIZE, "min": 4, "max": 32,
                               "tooltip": "Side the images are shrunk to before fitting (authors: 16). The model "
                                          "keeps (3·side²)² floats per class: 2.25 MiB at 16, 36 MiB at 32."}),
    }

    @checked_node_function
    def fit(self, folder, small_size, unique_id=None):
        with no_grad_normal_tensors():
            source = comfy.resolve_input_folder(folder, "reference folder")
            groups = load_reference_groups(source.path, small_size, comfy.folder_roots(source))
            monitor = cancel_and_progress(unique_id, len(groups))
            return (SmallImageGaussians.fit(groups, small_size, on_step=monitor),)


class GeneratorFreeSynthesis(FuseDreamNode, category="FuseDream/CLIPAG"):
    """CLIPAG generator-free text-to-image: optimises the pixels of an image so the CLIP scorer matches the
    prompt, over 32 DiffAugment views plus 32 random crops per step, with AdamW, gradient clipping and dynamic
    thresholding (the authors' recipe as defaults). Use a perceptually aligned CLIP (CLIPAG_ViTB32.pt) for
    recognisable images; plain CLIP gives adversarial noise, which shows the difference. Returns the best
    iterate, with live preview, progress and Cancel every step."""
    OUTPUTS = {"image": ("IMAGE", "The best iterate of every image."),
               "init": ("IMAGE", "The starting images."),
               "score": ("FLOAT", "Mean global CLIP score of the returned images at their steps."),
               "frames": ("IMAGE", "Frames kept every 'keep_frames_every' steps plus the final one.")}
    INPUTS = {
        "clip": ("FUSEDREAM_CLIP", {"tooltip": "The CLIP scorer, e.g. CLIPAG_ViTB32.pt from the CLIP loader."}),
        "prompt": ("STRING", {"default": "a watercolor painting of a lighthouse at sunset", "multiline": True,
                              "tooltip": SYNTAX}),
        "init": (list(INIT_MODES), {"default": "noise",
                                    "tooltip": "noise: N(0.5, 0.25²) pixels; color: a flat colour; image: the "
                                               "init_image input (the best CLIP matches if it holds more images "
                                               "than batch_size); gaussian: the best of 'candidates' samples of "
                                               "the init_gaussian input (the authors' init)."}),
        "size": ranged(R["size"], 224, "Side of the square image (authors: 224 = ViT-B/32's input).", step=8),
        "batch_size": ("INT", {"default": 1, "min": 1, "max": 16,
                               "tooltip": "Images optimised side by side (independent runs in one batch)."}),
        "steps": ranged(R["steps"], RECIPE.steps, "AdamW steps (authors: 100)."),
        "lr": ranged(R["lr"], RECIPE.lr, "AdamW learning rate on the pixels (authors: 0.0175).", step=0.0005,
                     round=False),
        "seed": SEED,
        "color": ("STRING", {"default": "#808080",
                             "tooltip": "Colour for init 'color': '#RRGGBB' or 'r, g, b' (0-255)."}),
        "candidates": ("INT", {"default": 1000, "min": 1, "max": 100_000,
                               "tooltip": "Samples of init_gaussian scored with CLIP (authors: 1000)."}),
        "views": ranged(R["views"], RECIPE.views, "DiffAugment copies of the whole image per step (authors: 32).",
                        advanced=True),
        "patches": ranged(R["patches"], RECIPE.patches, "Random crops (128/224 of the side) per step, resized to "
                                                        "the model's input (authors: 32; 0 = none).", advanced=True),
        "patch_weight": ranged(R["patch_weight"], RECIPE.patch_weight, "Weight of the crop loss (authors: 5.0).",
                               step=0.1, advanced=True),
        "input_noise": ranged(R["input_noise"], RECIPE.input_noise, "σ of the noise added to every view (authors: "
                                                                    "0.01).", step=0.001, advanced=True),
        "grad_clip": ranged(R["grad_clip"], RECIPE.grad_clip, "Largest gradient norm per image (authors: 0.001; 0 = "
                                                              "no clipping).", step=0.0001, round=False, advanced=True),
        "threshold": ranged(R["threshold"], RECIPE.threshold, "Dynamic-thresholding quantile after each step "
                                                              "(authors: 0.95); 0 clamps to [0, 1] instead.",
                            step=0.01, advanced=True),
        "weight_decay": ranged(R["weight_decay"], RECIPE.weight_decay, "AdamW weight decay on the pixels (authors "
                                                                       "keep torch's 0.01).", step=0.001,
                               advanced=True),
        **MONITOR_INPUTS,
    }
    OPTIONAL = {
        "init_image": ("IMAGE", {"tooltip": "Starting image(s) for init 'image' (centre-cropped to a square)."}),
        "init_gaussian": ("CLIPAG_IMAGE_GAUSSIAN", {"tooltip": "From Reference Image Gaussian, for init "
                                                               "'gaussian'."}),
    }

    @checked_node_function
    def synthesize(self, clip, prompt, init, size, batch_size, steps, lr, seed, color, candidates, views, patches,
                   patch_weight, input_noise, grad_clip, threshold, weight_decay, preview_every=5,
                   keep_frames_every=0, init_image=None, init_gaussian=None, unique_id=None):
        settings = PixelSynthesisSettings(
            steps=steps, lr=lr, weight_decay=weight_decay, views=views, patches=patches, patch_weight=patch_weight,
            input_noise=input_noise, grad_clip=grad_clip, threshold=threshold if threshold > 0 else None, seed=seed)
        prompts = parse_prompts(prompt)
        comfy.warn(truncation_warnings([t for t, _ in prompts], clip.tokenizer))
        if init == "gaussian":
            require(init_gaussian is not None, "init is 'gaussian' but no init_gaussian is connected: add a Reference "
                                               "Image Gaussian node or choose another init.")
            require(candidates >= batch_size,
                    f"candidates ({candidates}) must be at least batch_size ({batch_size}).")
        if init == "image":
            require(init_image is not None, "init is 'image' but no init_image is connected: connect an IMAGE "
                                            "(e.g. Load Image) or choose another init.")
        comfy.load_to_device(clip.model)
        objective = AugClipObjective(clip, prompts, AugmentPolicy(signed_range=False), views)
        with grad_enabled():
            start = self._init(objective, init, size, batch_size, seed, color, candidates, init_image, init_gaussian,
                               unique_id)
            monitor = NodeMonitor(unique_id, steps, preview_every, keep_frames_every, label="pixels")
            result = synthesize_pixels(objective, start, settings, on_step=monitor)
        return {"ui": monitor.ui(), "result": (to_image_batch(result.image), to_image_batch(start),
                                               float(result.best_score.mean()), monitor.frames())}

    @staticmethod
    def _init(objective, init, size, batch_size, seed, color, candidates, init_image, init_gaussian, unique_id):
        generator = torch.Generator().manual_seed(int(seed))
        if init == "noise":
            return noise_images(batch_size, size, generator)
        if init == "color":
            return flat_images(batch_size, size, parse_color(color))
        if init == "image":
            pool = square_resize(from_image_batch(ordinary(init_image).cpu(), "init_image"), size)
            if pool.shape[0] >= batch_size:
                return best_matches(objective, pool, batch_size,
                                    on_step=cancel_and_progress(unique_id, pool.shape[0]))
            return pool.repeat((batch_size + pool.shape[0] - 1) // pool.shape[0], 1, 1, 1)[:batch_size]
        return best_gaussian_samples(objective, init_gaussian, candidates, size, batch_size, seed,
                                     on_step=cancel_and_progress(unique_id, candidates))


NODE_CLASS_MAPPINGS = {
    "FuseDreamCLIPAGSynthesis": GeneratorFreeSynthesis,
    "FuseDreamReferenceImageGaussian": ReferenceImageGaussian,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FuseDreamCLIPAGSynthesis": "Generator-Free Synthesis (CLIPAG)",
    "FuseDreamReferenceImageGaussian": "Reference Image Gaussian (CLIPAG)",
}
