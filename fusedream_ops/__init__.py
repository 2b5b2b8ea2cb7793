"""fusedream_ops: FuseDream, CLIPAG and OVI as plain PyTorch functions (no ComfyUI import).

The rooms (docs/architecture.md): ``core`` (checkpoints, precision, progress, images, errors), ``models`` (BigGAN,
CLIP, LPIPS, Kandinsky 2.2 with one strict loader each), one room per paper (``fusedream``, ``composition``,
``clipag``, ``ovi``), and ``batch``, ``evaluation``, ``safety``, ``validation``, ``toyworld``, ``fixtures``.
The names below are the public API, importable from here; each lives in its room and is imported on first use::

    from fusedream_ops import FuseDreamSettings, generate, load_biggan, load_clip

    result = generate(load_biggan("models/biggan/biggan-deep-256"),
                      load_clip("auto", "models/open_clip/ViT-B-32.safetensors"),
                      "a photo of a blue dog", FuseDreamSettings(seed=1))
    result.image  # [1,3,H,W] in 0..1
"""
import importlib

PUBLIC = {
    "core.errors": ("FuseDreamError",),
    "core.progress": ("Step",),
    "core.images": ("to_pil", "from_pil"),
    "models.biggan": ("load_biggan", "BigGANGenerator"),
    "models.clip": ("load_clip", "ClipScorer"),
    "models.lpips": ("load_lpips",),
    "models.kandinsky": ("load_encoders", "load_encoders_from_files", "load_decoder", "load_trained_prior"),
    "fusedream.augment": ("AugmentPolicy", "diff_augment"),
    "fusedream.objective": ("AugClipObjective",),
    "fusedream.latents": ("BigGANLatent", "sample_latents"),
    "fusedream.basis": ("LatentBasis",),
    "fusedream.topk": ("topk_latents",),
    "fusedream.optimize": ("optimize_basis",),
    "fusedream.pipeline": ("FuseDreamSettings", "generate"),
    "composition.geometry": ("fuse", "crop"),
    "composition.bilevel": ("Cell", "optimize_composition", "composition_grid_search"),
    "composition.poisson": ("poisson_blend",),
    "clipag.synthesis": ("PixelSynthesisSettings", "synthesize_pixels"),
    "ovi.optimize": ("optimize_ovi",),
    "ovi.reference_stats": ("build_reference_stats", "load_reference_stats", "save_reference_stats"),
    "ovi.baselines": ("text_as_image_embeds", "run_trained_prior"),
    "ovi.decode": ("decode_image_embeds",),
}
_WHERE = {name: module for module, names in PUBLIC.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """Import a public name's room on first use: ``python -m fusedream_ops.batch --help`` stays light."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
