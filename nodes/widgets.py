"""Widget definitions more than one node family uses, defined once (ComfyUI's ``INPUT_TYPES`` tuples)."""
from __future__ import annotations

from ..fusedream_ops.core.precision import AUTO, PRECISION_TOOLTIP, PRECISIONS
from ..fusedream_ops.fusedream.basis import BASIS_MODES
from ..fusedream_ops.validation import ranges
from . import comfy

PRECISION = (list(PRECISIONS), {"default": AUTO, "tooltip": PRECISION_TOOLTIP})

def ranged(bounds: ranges.Range, default, tooltip: str, **options) -> tuple:
    """A number widget whose limits come from the range table that the CLI and batch runs check too."""
    return ("INT" if bounds.integer else "FLOAT", {"default": default, **bounds.widget(), **options,
                                                   "tooltip": tooltip})


def seed_input(drives: str = "") -> tuple:
    """The seed widget (randomised after each queue by ComfyUI); ``drives`` names what the seed draws."""
    what = f" ({drives})" if drives else ""
    return ("INT", {"default": 0, **ranges.SEED.widget(), "control_after_generate": True,
                    "tooltip": f"Random seed{what}; the same seed reproduces the same result."})


def model_files(folder: str, extensions: tuple[str, ...]):
    """The files of a model folder as a choice list, read each time ComfyUI asks (files come and go)."""
    return lambda: comfy.list_model_entries(folder, want_dirs=False, extensions=extensions)


def model_folders(folder: str):
    """The sub-folders of a model folder (diffusers-layout repositories) as a choice list, read each time."""
    return lambda: comfy.list_model_entries(folder, want_dirs=True)


# The basis optimisation's widgets (FuseDream eq. 4), shared by the Basis Optimizer and the composition nodes.
BASIS_MODE = (list(BASIS_MODES), {"default": "paper",
                                  "tooltip": "paper: scalar weights 1/k; official: the released code's per-element "
                                             "softmax weights, initialised N(0,1)."})
LATENT_NOISE = ranged(ranges.FUSEDREAM["latent_noise"], 0.01,
                      "Gaussian noise added to the latents each step (official 0.01).", step=0.001)
OPTIMIZE_Y = ("BOOLEAN", {"default": True, "tooltip": "Also learn the class embeddings."})
