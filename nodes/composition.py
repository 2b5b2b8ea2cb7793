"""FuseDream-Composition nodes: fuse/crop, LPIPS, composition optimizer, (α, t) grid search, Poisson blending."""
from __future__ import annotations

import torch

from ..fusedream_ops.composition.bilevel import (Cell, CompositionProblem, CompositionResult, composition_grid_searches,
                                                 optimize_compositions, parse_grid)
from ..fusedream_ops.composition.dynamic_barrier import METHODS
from ..fusedream_ops.composition.geometry import POSITIONS, crop, foreground_layer, fuse, paste_mask
from ..fusedream_ops.composition.iterate_choice import DEFAULT_KEEP, DEFAULT_KEEP_TOLERANCE, KEEP_MODES
from ..fusedream_ops.composition.poisson import poisson_blend
from ..fusedream_ops.core.autograd import no_grad_normal_tensors
from ..fusedream_ops.core.errors import require
from ..fusedream_ops.core.images import from_image_batch, to_image_batch
from ..fusedream_ops.core.precision import AUTO as AUTO_PRECISION
from ..fusedream_ops.models.lpips import NETS, find_backbone, load_lpips
from ..fusedream_ops.validation.images import LPIPS_MIN_SIZE, require_batches_match, require_image, require_same_size
from . import comfy
from .monitor import MONITOR_INPUTS, NodeMonitor, cancel_and_progress, segments
from .node_inputs import checked_loader_function, checked_node_function
from .node_schema import FuseDreamNode
from .widgets import BASIS_MODE, LATENT_NOISE, OPTIMIZE_Y, PRECISION, seed_input

LPIPS_FOLDER = "lpips"
comfy.register_model_folder(LPIPS_FOLDER, (".pth",))

CATEGORY = "FuseDream/composition"
SEED = seed_input("latent noise, augmentations")
SCALE = ("FLOAT", {"default": 0.65, "min": 0.05, "max": 0.95, "step": 0.01,
                   "tooltip": "α: the foreground's size relative to the background (the paper tries 0.65 and 0.5)."})
POSITION = (list(POSITIONS), {"default": "center", "tooltip": "t: where the scaled foreground is pasted."})

OPTIMIZER_SOCKETS = {
    "generator": ("BIGGAN", {"tooltip": "The BigGAN generator (both images come from it)."}),
    "objective": ("FUSEDREAM_OBJECTIVE", {"tooltip": "s_Fuse: the AugCLIP objective of the fused image."}),
    "lpips": ("FUSEDREAM_LPIPS", {"tooltip": "ℓ_Fuse: LPIPS between the foreground and the background "
                                             "under it."}),
    "foreground": ("BIGGAN_LATENT", {"tooltip": "Foreground basis latents (e.g. Top-k init)."}),
}
"""The sockets the fixed-cell optimizer and the grid search share, in their widget order."""

BACKGROUNDS = {
    "background": ("BIGGAN_LATENT", {"tooltip": "Background basis latents (e.g. Top-k init with another seed or "
                                                "prompt), optimised together with the foreground. Connect this or "
                                                "background_image."}),
    "background_image": ("IMAGE", {"tooltip": "A fixed background image of any size instead of generated latents: "
                                              "only the foreground moves. Connect this or background."}),
}
"""The optional background sockets of both optimizers: exactly one is connected."""


COMPOSED_IMAGES = {
    "blended": ("IMAGE", "The foreground Poisson-blended into the background: the final image (one per seed, in seed "
                         "order)."),
    "fused": ("IMAGE", "The fused image that was optimised (plain paste; one per seed)."),
    "foreground": ("IMAGE", "Its foreground."),
    "background": ("IMAGE", "Its background."),
    "mask": ("MASK", "Where its foreground lands."),
}
"""The first outputs of both optimizers: the chosen composition's images (the grid search's best cell)."""


def _background(background, background_image):
    """The background latents, or the first background image as ``[1,3,H,W]`` (exactly one must be connected)."""
    require((background is None) != (background_image is None),
            "connect exactly one of 'background' (latents to optimise) and 'background_image' (a fixed image).")
    if background is not None:
        return background
    with no_grad_normal_tensors():
        return from_image_batch(background_image[:1].clone(), "background_image")


OPTIMIZER_WIDGETS = {
    "steps": ("INT", {"default": 1000, "min": 1, "max": 100_000,
                      "tooltip": "Adam steps per (scale, position) cell (single-image FuseDream: 1000)."}),
    "lr": ("FLOAT", {"default": 5e-3, "min": 1e-6, "max": 1.0, "step": 1e-4, "round": False,
                     "tooltip": "Adam learning rate (FuseDream: 5e-3)."}),
    "method": (list(METHODS), {"default": "bilevel",
                               "tooltip": "bilevel: eq. 6, maximise AugCLIP first, lower LPIPS without "
                                          "lowering it; linear: eq. 7 with a fixed λ; inverse: eq. 8, LPIPS "
                                          "first (Appendix B, for comparison)."}),
    "beta": ("FLOAT", {"default": 1.0, "min": 0.001, "max": 100.0, "step": 0.01,
                       "tooltip": "β of the dynamic barrier (paper: 1): how fast the primary must improve."}),
    "linear_lambda": ("FLOAT", {"default": 0.5, "min": 0.01, "max": 0.99, "step": 0.01, "advanced": True,
                                "tooltip": "λ of the linear method: minimise (1 − λ)·LPIPS − λ·AugCLIP."}),
    "mode": BASIS_MODE,
    "latent_noise": LATENT_NOISE,
    "optimize_y": OPTIMIZE_Y,
    "seed": SEED,
    "batch": ("INT", {"default": 1, "min": 1, "max": 64,
                      "tooltip": "Independent runs with seeds seed, seed+1, …, optimised together in one batched "
                                 "forward/backward per step (fills a GPU); each gives what its own seed gives "
                                 "alone. The image outputs hold one image per seed, in seed order."}),
    "score_draws": ("INT", {"default": 4, "min": 1, "max": 100, "advanced": True,
                            "tooltip": "Batches of augmented views averaged for the final AugCLIP score; every "
                                       "cell is scored on the same views."}),
    "blend_iterations": ("INT", {"default": 5000, "min": 1, "max": 100_000, "advanced": True,
                                 "tooltip": "Most conjugate-gradient iterations of the final Poisson blend."}),
    "keep": (list(KEEP_MODES), {"default": DEFAULT_KEEP, "advanced": True,
                                "tooltip": "Which iterate a cell returns. augclip: the step with the highest "
                                           "AugCLIP (one noisy draw of views per step); last: the final step "
                                           "(as the official single-image code); eq5: the lowest LPIPS among "
                                           "the steps whose AugCLIP is within keep_tolerance of the highest "
                                           "(eq. 5: min LPIPS among the maximisers of AugCLIP)."}),
    "keep_tolerance": ("FLOAT", {"default": DEFAULT_KEEP_TOLERANCE, "min": 0.0, "max": 1.0, "step": 0.001,
                                 "round": False, "advanced": True,
                                 "tooltip": "eq5 only: how far below the highest AugCLIP draw (absolute) a "
                                            "step still counts as a maximiser. About twice the noise of one "
                                            "draw; that noise depends on the CLIP model and the copies."}),
}
"""The widgets the fixed-cell optimizer and the grid search share, in their widget order."""


def _options(lr, method, beta, linear_lambda, mode, latent_noise, optimize_y, score_draws, blend_iterations, keep,
             keep_tolerance):
    return dict(lr=lr, method=method, beta=beta, weight=linear_lambda, mode=mode, latent_noise=latent_noise,
                optimize_y=optimize_y, score_draws=score_draws, blend_iterations=blend_iterations, keep=keep,
                keep_tolerance=keep_tolerance)


def _problems(foreground, background, objective, seed, batch) -> list[CompositionProblem]:
    """One problem per seed ``seed … seed+batch-1`` (wrapping at 2⁶⁴, as the Basis Optimizer's batch)."""
    return [CompositionProblem(foreground, background, objective, (seed + i) % 2**64) for i in range(batch)]


def _mask(masks: torch.Tensor) -> torch.Tensor:
    """``[B,1,H,W]`` → ComfyUI MASK ``[B,H,W]`` on the CPU."""
    return masks[:, 0].float().cpu().contiguous()


class FuseCrop(FuseDreamNode, category=CATEGORY):
    """FuseDream's Fuse and Crop: pastes the foreground, resized by 'scale', at 'position' on the background;
    also returns the background crop under it, the foreground placed on the canvas (edges extended, ready for
    Poisson Blend) and the paste mask."""
    OUTPUTS = {"fused": "IMAGE", "crop": "IMAGE", "foreground_layer": "IMAGE", "mask": "MASK"}
    INPUTS = {
        "foreground": ("IMAGE", {"tooltip": "The image to paste (any size; batch 1 or the background's)."}),
        "background": ("IMAGE", {"tooltip": "The image to paste onto; it sets the output size."}),
        "scale": SCALE,
        "position": POSITION,
    }

    @checked_node_function
    def fuse(self, foreground, background, scale, position):
        with no_grad_normal_tensors():
            fg = from_image_batch(foreground.clone(), "foreground")
            bg = from_image_batch(background.clone(), "background")
            h, w = bg.shape[-2:]
            fused = fuse(fg, bg, scale, position)
            layer = foreground_layer(fg, h, w, scale, position).expand(fused.shape[0], -1, -1, -1)
            mask = paste_mask(h, w, scale, position).expand(fused.shape[0], -1, -1, -1)
            return (to_image_batch(fused), to_image_batch(crop(bg, scale, position)), to_image_batch(layer),
                    _mask(mask))


class LPIPSLoader(FuseDreamNode, category="FuseDream/loaders"):
    """Loads LPIPS (v0.1) for the composition's perceptual consistency loss. The linear heads ship with the lpips
    package; the backbone is torchvision's ImageNet checkpoint, read from models/lpips or the torch hub cache
    ($TORCH_HOME/hub/checkpoints): alexnet-owt-7be5be79.pth for alex, vgg16-397923af.pth for vgg. Nothing is
    downloaded."""
    OUTPUTS = {"lpips": "FUSEDREAM_LPIPS"}
    INPUTS = {
        "net": (list(NETS), {"default": "alex",
                             "tooltip": "LPIPS backbone: alex (default, as LPIPS recommends as a loss) or vgg."}),
        "precision": PRECISION,
    }

    @checked_loader_function
    def load(self, net, precision=AUTO_PRECISION):
        return (load_lpips(net, find_backbone(net, comfy.model_folder_paths(LPIPS_FOLDER), comfy.extra_roots()),
                           precision=comfy.weight_dtype(precision, "vae")),)


class LPIPSDistance(FuseDreamNode, category=CATEGORY, output_node=True):
    """LPIPS distance between two images (or image batches of equal size): lower = more alike."""
    OUTPUTS = {"distance": "FLOAT", "distances": "STRING"}
    INPUTS = {
        "image_a": ("IMAGE", {"tooltip": "First image(s)."}),
        "image_b": ("IMAGE", {"tooltip": "Second image(s), same size; a batch of 1 is compared to every a."}),
        "lpips": ("FUSEDREAM_LPIPS", {"tooltip": "The LPIPS model."}),
    }

    @checked_node_function
    def distance(self, image_a, image_b, lpips):
        smallest = LPIPS_MIN_SIZE.get(getattr(lpips, "net", ""), 1)
        require_image(image_a, "image_a", smallest)
        require_image(image_b, "image_b", smallest)
        require_same_size(image_a, "image_a", image_b, "image_b")
        require_batches_match(image_a.shape[0], "image_a", image_b.shape[0], "image_b")
        device = comfy.load_to_device(lpips)
        with no_grad_normal_tensors():
            a = from_image_batch(image_a.clone(), "image_a").to(device)
            b = from_image_batch(image_b.clone(), "image_b").to(device)
            values = lpips(a, b).cpu()
        text = ", ".join(f"{v:.4f}" for v in values.tolist())
        return {"ui": {"text": [text]}, "result": (float(values.mean()), text)}


class CompositionOptimizer(FuseDreamNode, category=CATEGORY):
    """FuseDream-Composition for one scale and position (eq. 5–6): co-optimises a foreground and a background
    latent so the fused image maximises AugCLIP while LPIPS between the foreground and the background under it
    falls, with the dynamic-barrier step (no weight to tune). Returns the best iterate and its Poisson blend;
    live preview of the fused image, AugCLIP and LPIPS chart."""
    OUTPUTS = {**COMPOSED_IMAGES,
               "augclip": ("FLOAT", "AugCLIP of the fused image (with a batch: the highest of the batch)."),
               "lpips": ("FLOAT", "LPIPS between the foreground and the background crop (of that same image)."),
               "foreground_latent": ("BIGGAN_LATENT", "The best foreground latent (one per seed)."),
               "background_latent": ("BIGGAN_LATENT", "The best background latent (one per seed; none with a "
                                                      "background image)."),
               "frames": ("IMAGE", "Frames kept every 'keep_frames_every' steps plus the last (the leading run's).")}
    INPUTS = {
        **OPTIMIZER_SOCKETS,
        "scale": SCALE,
        "position": POSITION,
        **OPTIMIZER_WIDGETS,
        **MONITOR_INPUTS,
    }
    OPTIONAL = BACKGROUNDS

    @checked_node_function
    def optimize(self, generator, objective, lpips, foreground, scale, position, steps, lr, method, beta,
                 linear_lambda, mode, latent_noise, optimize_y, seed, batch=1, score_draws=4, blend_iterations=5000,
                 keep=DEFAULT_KEEP, keep_tolerance=DEFAULT_KEEP_TOLERANCE, preview_every=5, keep_frames_every=0,
                 background=None, background_image=None, unique_id=None):
        cell = Cell(scale, position)
        background = _background(background, background_image)
        comfy.load_to_device(generator.model, objective.scorer.model, lpips)
        monitor = NodeMonitor(unique_id, steps, preview_every, keep_frames_every)
        r = CompositionResult.cat(optimize_compositions(
            generator, _problems(foreground, background, objective, seed, batch), lpips, [cell], steps,
            on_step=monitor, **_options(lr, method, beta, linear_lambda, mode, latent_noise, optimize_y, score_draws,
                                        blend_iterations, keep, keep_tolerance)))
        b = r.best
        return {"ui": monitor.ui(), "result": (
            to_image_batch(r.blended), to_image_batch(r.fused), to_image_batch(r.foreground),
            to_image_batch(r.background), _mask(r.masks), float(r.augclip[b]), float(r.lpips[b]),
            r.foreground_latent, r.background_latent, monitor.frames())}


class CompositionGridSearch(FuseDreamNode, category=CATEGORY):
    """FuseDream-Composition (Alg. 2): runs the composition optimizer for every scale × position (paper: 0.65,
    0.5 × 9 positions = 18 runs) and returns the one whose fused image has the highest AugCLIP, its Poisson
    blend, and every candidate as a batch. Several cells ('cells_per_batch') and several seeds ('batch': one best
    cell per seed) can run as one batch when memory allows."""
    OUTPUTS = {**COMPOSED_IMAGES,
               "scale": ("FLOAT", "The chosen scale α (with a batch: of the seed whose best cell has the highest "
                                  "AugCLIP)."),
               "position": ("STRING", "The chosen position t (same seed)."),
               "augclip": ("FLOAT", "Its AugCLIP (same seed)."),
               "lpips": ("FLOAT", "Its LPIPS (same seed)."),
               "candidates": ("IMAGE", "Every cell's fused image, in grid order (scales, then positions); with a "
                                       "batch seed by seed."),
               "candidates_blended": ("IMAGE", "Every cell's Poisson blend, same order."),
               "candidate_scores": ("STRING", "One line per cell: scale, position, AugCLIP, LPIPS, the best marked *;"
                                              " with a batch one block per seed."),
               "frames": ("IMAGE", "Frames kept every 'keep_frames_every' steps plus the last (the leading run's).")}
    INPUTS = {
        **OPTIMIZER_SOCKETS,
        "scales": ("STRING", {"default": "0.65, 0.5", "tooltip": "Comma-separated scales α in (0, 1)."}),
        "positions": ("STRING", {"default": "all", "tooltip": "'all' or comma-separated positions among "
                                                              f"{', '.join(POSITIONS)}."}),
        "cells_per_batch": ("INT", {"default": 1, "min": 1, "max": 64, "advanced": True,
                                    "tooltip": "Cells optimised together as one batch (faster on a large "
                                               "GPU, more memory)."}),
        **OPTIMIZER_WIDGETS,
        **MONITOR_INPUTS,
    }
    OPTIONAL = BACKGROUNDS

    @checked_node_function
    def search(self, generator, objective, lpips, foreground, scales, positions, cells_per_batch, steps, lr, method,
               beta, linear_lambda, mode, latent_noise, optimize_y, seed, batch=1, score_draws=4,
               blend_iterations=5000, keep=DEFAULT_KEEP, keep_tolerance=DEFAULT_KEEP_TOLERANCE, preview_every=5,
               keep_frames_every=0, background=None, background_image=None, unique_id=None):
        cells = parse_grid(scales, positions)
        background = _background(background, background_image)
        comfy.load_to_device(generator.model, objective.scorer.model, lpips)
        chunks = [cells[i:i + cells_per_batch] for i in range(0, len(cells), cells_per_batch)]
        monitor = NodeMonitor(unique_id, steps * len(chunks), preview_every, keep_frames_every,
                              segment=segments("cell" if cells_per_batch == 1 else "batch", steps,
                                               [_cells_label(c) for c in chunks]))
        problems = _problems(foreground, background, objective, seed, batch)
        results = composition_grid_searches(
            generator, problems, lpips, cells, cells_per_batch, steps, on_step=monitor,
            **_options(lr, method, beta, linear_lambda, mode, latent_noise, optimize_y, score_draws, blend_iterations,
                       keep, keep_tolerance))
        best = CompositionResult.cat([r.select(slice(r.best, r.best + 1)) for r in results])
        b = best.best
        blocks = [_score_lines(r) for r in results]
        lines = blocks[0] if batch == 1 else "\n".join(f"seed {p.seed}:\n{block}" for p, block in zip(problems, blocks))
        ui = monitor.ui()
        ui["text"] = [lines]
        every = CompositionResult.cat(results)
        return {"ui": ui, "result": (
            to_image_batch(best.blended), to_image_batch(best.fused), to_image_batch(best.foreground),
            to_image_batch(best.background), _mask(best.masks), float(best.cells[b].scale), best.cells[b].position,
            float(best.augclip[b]), float(best.lpips[b]), to_image_batch(every.fused), to_image_batch(every.blended),
            lines, monitor.frames())}


def _cells_label(cells: list[Cell]) -> str:
    """The cells one step batch optimises, as the chart names them: "0.65 top-left" or "0.65 top-left +3"."""
    first = f"{cells[0].scale:g} {cells[0].position}"
    return first if len(cells) == 1 else f"{first} +{len(cells) - 1}"


def _score_lines(r: CompositionResult) -> str:
    """One line per cell: scale, position, AugCLIP, LPIPS; the best cell marked ``*``."""
    return "\n".join(f"{'*' if i == r.best else ' '} {c.scale:g} {c.position}: augclip {s:.4f}, lpips {l:.4f}"
                     for i, (c, s, l) in enumerate(zip(r.cells, r.augclip.tolist(), r.lpips.tolist())))


class PoissonBlend(FuseDreamNode, category=CATEGORY):
    """Seamless cloning (Poisson blending): inside the mask, keeps the foreground's gradients and takes the
    colours at the mask border from the background, so the seam disappears. Works on any aligned IMAGE pair +
    MASK of the same size, in batches, on the GPU."""
    OUTPUTS = {"image": "IMAGE"}
    INPUTS = {
        "foreground": ("IMAGE", {"tooltip": "The source, aligned with the background (same size); its pixels "
                                            "just outside the mask set the gradients at the seam."}),
        "background": ("IMAGE", {"tooltip": "The destination image."}),
        "mask": ("MASK", {"tooltip": "Where to clone the foreground (values above 0.5); must leave some "
                                     "background."}),
        "max_iterations": ("INT", {"default": 5000, "min": 1, "max": 100_000, "advanced": True,
                                   "tooltip": "Most conjugate-gradient iterations."}),
        "tolerance": ("FLOAT", {"default": 1e-5, "min": 1e-9, "max": 0.1, "step": 1e-6, "round": False,
                                "advanced": True, "tooltip": "Stop when the residual is this small relative "
                                                             "to the right-hand side."}),
    }

    @checked_node_function
    def blend(self, foreground, background, mask, max_iterations, tolerance, unique_id=None):
        device = comfy.torch_device()
        with no_grad_normal_tensors():
            fg = from_image_batch(foreground.clone(), "foreground").to(device)
            bg = from_image_batch(background.clone(), "background").to(device)
            out = poisson_blend(fg, bg, mask.clone().to(device), max_iterations, tolerance,
                               on_step=cancel_and_progress(unique_id, max_iterations, every=10))
        return (to_image_batch(out),)


NODE_CLASS_MAPPINGS = {
    "FuseDreamFuseCrop": FuseCrop,
    "FuseDreamLPIPSLoader": LPIPSLoader,
    "FuseDreamLPIPSDistance": LPIPSDistance,
    "FuseDreamCompositionOptimizer": CompositionOptimizer,
    "FuseDreamCompositionGridSearch": CompositionGridSearch,
    "FuseDreamPoissonBlend": PoissonBlend,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FuseDreamFuseCrop": "Fuse / Crop (FuseDream)",
    "FuseDreamLPIPSLoader": "LPIPS Loader (FuseDream)",
    "FuseDreamLPIPSDistance": "LPIPS Distance (FuseDream)",
    "FuseDreamCompositionOptimizer": "Composition Optimizer (FuseDream)",
    "FuseDreamCompositionGridSearch": "Composition Grid Search (FuseDream)",
    "FuseDreamPoissonBlend": "Poisson Blend (FuseDream)",
}
