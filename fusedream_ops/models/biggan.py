"""BigGAN-deep generators (pytorch-pretrained-biggan) loaded strictly, and driven in FuseDream's latent space.

FuseDream optimizes the latent ξ = (z, y) where y is the *continuous* class embedding, not a class label:
the generator is called as ``G(z, y)`` with ``y = E[:, c]`` for a class c at initialisation
(``E`` = the model's ``Linear(num_classes, z_dim)`` class embedding).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..core.autograd import no_grad_normal_tensors
from ..core.checkpoints import WHERE_TO_GET, check_state_dict, read_json_object, read_state_dict
from ..core.errors import FuseDreamError, require
from ..core.precision import Precision, cast_frozen, module_dtype
from ..safety.contained import contained_file, entry_roots
from ..safety.meta_budget import build_budget, shapes_of
from .fast_layers import use_fused_batch_norm, use_rgb_only_output

CONFIG_NAME = "config.json"
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
CLASSES_NAME = "classes.txt"


@dataclass
class BigGANFiles:
    weights: str
    config: str | None
    classes: str | None


def find_biggan_files(path: str) -> BigGANFiles:
    """The weight, config and class-name files of a checkpoint folder or single ``.safetensors`` file."""
    if os.path.isdir(path):
        config = os.path.join(path, CONFIG_NAME)
        require(os.path.isfile(config),
                f"BigGAN checkpoint folder '{path}' has no {CONFIG_NAME}. Expected the pytorch-pretrained-biggan "
                f"layout: {CONFIG_NAME} + {' or '.join(WEIGHT_NAMES)}.")
        weights = next((os.path.join(path, n) for n in WEIGHT_NAMES if os.path.isfile(os.path.join(path, n))), None)
        require(weights is not None,
                f"BigGAN checkpoint folder '{path}' has no weights: expected {' or '.join(WEIGHT_NAMES)}.")
        classes = os.path.join(path, CLASSES_NAME)
        return BigGANFiles(weights, config, classes if os.path.isfile(classes) else None)
    require(os.path.isfile(path), f"BigGAN checkpoint '{path}' does not exist. {WHERE_TO_GET}")
    require(path.endswith(".safetensors"),
            f"BigGAN checkpoint '{path}': a single file must be .safetensors; a .bin/.pth needs a folder with "
            f"{CONFIG_NAME} beside it.")
    stem = path[: -len(".safetensors")]
    config = stem + ".json"
    classes = stem + ".classes.txt"
    return BigGANFiles(path, config if os.path.isfile(config) else None,
                       classes if os.path.isfile(classes) else None)


def contained_biggan_files(files: BigGANFiles, roots: Sequence[str]) -> BigGANFiles:
    """``files`` resolved, each refused when it is a link leading outside ``roots``."""
    def resolve(path, what):
        return None if path is None else contained_file(path, roots, what)

    return BigGANFiles(resolve(files.weights, "BigGAN weights"), resolve(files.config, "BigGAN config"),
                       resolve(files.classes, "BigGAN class names"))


def infer_biggan_config(state: dict[str, torch.Tensor]) -> dict:
    """A BigGAN-deep config read off the tensor shapes of a checkpoint.

    Up-sampling leaves no trace in the weights; like every released BigGAN-deep config, every second block
    (odd index) is taken to up-sample.
    """
    try:
        z_dim, num_classes = state["embeddings.weight"].shape
        gen_z = state.get("generator.gen_z.weight_orig", state.get("generator.gen_z.weight"))
        if gen_z is None:
            raise KeyError("generator.gen_z.weight")
        ch = gen_z.shape[0] // (4 * 4 * 16)
        n_stats = state["generator.bn.running_means"].shape[0]
    except KeyError as exc:
        raise FuseDreamError(f"This is not a BigGAN-deep checkpoint (no {exc.args[0]}).") from None
    indices = sorted({int(k.split(".")[2]) for k in state if k.startswith("generator.layers.")})
    layers, attention = [], None
    for i in indices:
        prefix = f"generator.layers.{i}."
        if any(k.startswith(prefix + "snconv1x1_theta") for k in state):
            attention = len(layers)
            continue
        conv0 = state.get(prefix + "conv_0.weight_orig", state.get(prefix + "conv_0.weight"))
        conv3 = state.get(prefix + "conv_3.weight_orig", state.get(prefix + "conv_3.weight"))
        if conv0 is None or conv3 is None:
            raise FuseDreamError(f"This is not a BigGAN-deep checkpoint (no {prefix}conv_0/conv_3 weight).")
        layers.append((len(layers) % 2 == 1, conv0.shape[1] // ch, conv3.shape[0] // ch))
    ups = sum(1 for up, _, _ in layers if up)
    return {"output_dim": 4 * 2 ** ups, "z_dim": z_dim, "class_embed_dim": z_dim, "channel_width": ch,
            "num_classes": num_classes, "layers": layers,
            "attention_layer_position": attention if attention is not None else len(layers) + 1,
            "eps": 1e-4, "n_stats": n_stats}


def biggan_resolution(config) -> int:
    """Output side length: 4·2^(number of up-sampling blocks); the config's ``output_dim`` is only metadata."""
    return 4 * 2 ** sum(1 for layer in config.layers if layer[0])


def fold_spectral_norm(module: nn.Module) -> None:
    """Replace every spectral-normalised weight by its eval-mode value W/σ (one matmul less per layer per step)."""
    for m in module.modules():
        if hasattr(m, "weight_orig"):
            nn.utils.remove_spectral_norm(m)


class BigGANGenerator(nn.Module):
    """A frozen BigGAN-deep generator: ``forward(z, y, truncation)`` → images ``[B,3,H,W]`` in 0..1.

    Latents and images are fp32 whatever the weights' dtype. Each batch norm and the ReLU after it run as one fused
    layer whose gain and shift are computed in fp32 from fp32 weights
    (:func:`~fusedream_ops.models.fast_layers.use_fused_batch_norm`; wrap a model before casting it so that those weights
    were never rounded); the output convolution computes only the 3 channels the model keeps
    (:func:`~fusedream_ops.models.fast_layers.use_rgb_only_output`).
    """

    def __init__(self, model, class_names: list[str] | None = None, name: str = "biggan"):
        super().__init__()
        self.model = model
        self.name = name
        self.config = model.config
        self.z_dim = model.config.z_dim
        self.num_classes = model.config.num_classes
        self.resolution = biggan_resolution(model.config)
        self.class_names = class_names
        self.model.eval().requires_grad_(False)
        use_rgb_only_output(self.model.generator)
        use_fused_batch_norm(self.model.generator)

    @property
    def device(self) -> torch.device:
        return self.model.embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return module_dtype(self.model)

    def class_embedding(self, indices: torch.Tensor) -> torch.Tensor:
        """y = E[:, c] for each class index c: ``[N, z_dim]``."""
        return self.model.embeddings.weight.t()[indices.to(self.device)]

    def forward(self, z: torch.Tensor, y: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        require(0 < truncation <= 1, f"truncation must be in (0, 1], got {truncation}.")
        out = self.model.generator(torch.cat([z, y], dim=1).float(), truncation)
        return (out.float() + 1) / 2

    def decode(self, latent) -> torch.Tensor:
        """Images of a :class:`~fusedream_ops.fusedream.latents.BigGANLatent` batch (tanh mapped linearly to 0..1)."""
        return self(latent.z.to(self.device), latent.y.to(self.device), latent.truncation)


def read_class_names(path: str | None, num_classes: int) -> list[str] | None:
    """Class names from a ``classes.txt`` (one per line); ImageNet's for 1000-class models without one."""
    if path is not None:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        require(len(names) == num_classes,
                f"'{path}' lists {len(names)} class names but the model has {num_classes} classes.")
        return names
    if num_classes == 1000:
        from .imagenet_classes import IMAGENET_CLASSES

        return list(IMAGENET_CLASSES)
    return None


def load_biggan(path: str, precision: Precision = "fp32", roots: Sequence[str] = ()) -> BigGANGenerator:
    """Load a BigGAN-deep checkpoint strictly: every missing, unexpected or mis-shaped tensor is an error.

    ``precision`` (see :mod:`~fusedream_ops.core.precision`) sets the weights' dtype after the strict load. Every file read
    must resolve inside ``roots`` or the entry's own folder (:func:`~fusedream_ops.safety.contained.entry_roots`)."""
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    files = contained_biggan_files(find_biggan_files(path), entry_roots(path, roots))
    state = read_state_dict(files.weights)
    if files.config is not None:
        config = BigGANConfig.from_dict(read_json_object(files.config, "BigGAN config"))
        _require_config_fits(config, state, path, files.config)
    else:
        config = BigGANConfig.from_dict(infer_biggan_config(state))
    shapes = _meta_biggan(config, files.config, state)  # compared with the checkpoint before anything is allocated
    check_state_dict(shapes, state, f"BigGAN checkpoint '{path}'", hint=lambda: _resolution_hint(state, config))
    with no_grad_normal_tensors():
        model = BigGAN(config)
        model.load_state_dict(state, strict=True)
        fold_spectral_norm(model)
        names = read_class_names(files.classes, config.num_classes)
        generator = BigGANGenerator(model, names, name=os.path.basename(os.path.normpath(path)))
        cast_frozen(generator.model, precision, "vae")
    return generator


SIZE_FIELDS = ("z_dim", "class_embed_dim", "num_classes", "channel_width", "n_stats")
"""The config's sizes a checkpoint shows (besides the blocks): compared before anything is built."""


def _require_config_fits(config, state: dict, path: str, source: str) -> None:
    """The config's block list and sizes against the checkpoint's tensor shapes, each mismatch named by field."""
    layers = config.layers
    require(isinstance(layers, list) and all(isinstance(layer, (list, tuple)) and len(layer) == 3
                                             and all(isinstance(v, int) for v in layer) for layer in layers),
            f"BigGAN config '{source}': 'layers' must be a list of [up-sample, in, out] triples (true/false and two "
            f"channel multipliers), got {str(layers)[:80]}.")
    blocks = len({k.split(".")[2] for k in state if k.startswith("generator.layers.")})
    require(len(layers) <= blocks,
            f"BigGAN checkpoint '{path}' does not match the architecture: the config has {len(layers)} blocks, "
            f"the checkpoint {blocks} (attention included). {_resolution_hint(state, config)}")
    try:
        found = infer_biggan_config(state)
    except FuseDreamError:
        return  # not a complete BigGAN-deep: the strict comparison names the missing tensors
    wrong = [f"{field} is {getattr(config, field, None)} but the checkpoint has {found[field]}"
             for field in SIZE_FIELDS if isinstance(getattr(config, field, None), int)
             and not isinstance(getattr(config, field), bool) and getattr(config, field) != found[field]]
    wrong += [f"layers[{i}] has channel multipliers {tuple(a[1:])} but the checkpoint {tuple(b[1:])}"
              for i, (a, b) in enumerate(zip(layers, found["layers"])) if tuple(a[1:]) != tuple(b[1:])]
    require(not wrong, f"BigGAN config '{source}' does not match the checkpoint '{path}': {'; '.join(wrong[:8])}. "
                       f"{_resolution_hint(state, config)}")


def _meta_biggan(config, source: str | None, state: dict):
    """The generator ``config`` describes, built on the meta device (every shape, no memory) under a budget taken
    from the checkpoint ``state`` (:func:`~fusedream_ops.safety.meta_budget.build_budget`)."""
    from pytorch_pretrained_biggan import BigGAN

    try:
        with build_budget(shapes_of(state), f"BigGAN config '{source}'", vars(config)), torch.device("meta"):
            return BigGAN(config)
    except FuseDreamError:
        raise
    except Exception as exc:  # a config.json with wrong types or impossible sizes
        raise FuseDreamError(f"BigGAN config '{source}' does not describe a BigGAN-deep: {type(exc).__name__}: "
                             f"{exc}") from None


def _resolution_hint(state: dict, config) -> str:
    try:
        found = infer_biggan_config(state)
    except FuseDreamError as exc:
        return str(exc).removeprefix("[FuseDream] ")
    ups = sum(1 for layer in config.layers if layer[0])
    described = f"{4 * 2 ** ups}px" if ups <= MAX_UPSAMPLINGS else f"{ups} up-sampling blocks"
    return (f"The weights are a {found['output_dim']}px BigGAN-deep with {len(found['layers'])} blocks and "
            f"channel width {found['channel_width']}; the config describes {described} with "
            f"{len(config.layers)} blocks and width {config.channel_width}.")


MAX_UPSAMPLINGS = 12
"""Up-sampling blocks beyond which a resolution (4·2^n px) is not worth printing: 16384 px."""


def save_biggan(model, folder: str, class_names: list[str] | None = None) -> str:
    """Write ``model`` (a pytorch-pretrained-biggan ``BigGAN``) in the folder layout :func:`load_biggan` reads."""
    from safetensors.torch import save_file

    from ..core.checkpoints import atomic_write, atomic_write_text

    os.makedirs(folder, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(os.path.join(folder, "model.safetensors"), lambda p: save_file(state, p))
    atomic_write_text(os.path.join(folder, CONFIG_NAME), model.config.to_json_string())
    if class_names is not None:
        atomic_write_text(os.path.join(folder, CLASSES_NAME), "\n".join(class_names) + "\n")
    return folder
