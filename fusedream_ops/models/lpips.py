"""LPIPS (Zhang et al. 2018) from the ``lpips`` package, with its torchvision backbone read from a local file.

``lpips.LPIPS`` would download the ImageNet AlexNet/VGG16 weights through torchvision at construction. Here the
trunk is built empty and filled from torchvision's own checkpoint file (same file name as torchvision's download
cache), found in the pack's ``models/lpips`` folder or ``$TORCH_HOME/hub/checkpoints``; the linear heads come from
the weights bundled with ``lpips``. Both are loaded strictly. A random trunk exists only for tests and fixtures.
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import torch
from torch import nn

from ..core.autograd import no_grad_normal_tensors
from ..core.checkpoints import check_state_dict, read_state_dict
from ..core.errors import FuseDreamError, require
from ..core.precision import Precision, cast_frozen, module_dtype
from ..safety.contained import contained_file

BACKBONE_FILES = {
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
}
NETS = tuple(BACKBONE_FILES)
IGNORED_PREFIXES = ("classifier.",)
"""torchvision's checkpoints also hold the classifier, which LPIPS does not use."""


def torch_hub_checkpoints() -> str:
    """Where torchvision caches downloads: ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch``)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def find_backbone(net: str, folders: list[str], roots: Sequence[str] = ()) -> str:
    """The torchvision checkpoint of ``net`` in ``folders`` then the torch hub cache, or an error saying where
    to put which file. A file found must resolve inside the folder it was found in (or ``roots``)."""
    require(net in NETS, f"LPIPS network must be one of {', '.join(NETS)}, got '{net}'.")
    name, url = BACKBONE_FILES[net]
    searched = list(folders) + [torch_hub_checkpoints()]
    for folder in searched:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return contained_file(path, [folder, *roots], f"LPIPS ({net}) backbone")
    raise FuseDreamError(f"LPIPS ({net}) needs torchvision's ImageNet weights '{name}' (download: {url}). Put the "
                         f"file in one of: {', '.join(searched)}.")


class PerceptualDistance(nn.Module):
    """Frozen LPIPS: ``forward(a, b)`` → one distance per image pair of ``[B,3,H,W]`` images in 0..1."""

    def __init__(self, model, net: str):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.net = net

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        require(a.shape[-2:] == b.shape[-2:], f"LPIPS compares images of one size, got {tuple(a.shape[-2:])} and "
                                              f"{tuple(b.shape[-2:])}.")
        dtype = module_dtype(self.model)
        return self.model(a.to(dtype), b.to(dtype), normalize=True).flatten().float()


def _lpips_heads(net: str) -> dict[str, torch.Tensor]:
    import lpips

    path = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", f"{net}.pth")
    return read_state_dict(path)


def _trunk_state(trunk: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """torchvision ``features.<i>.*`` keys → the LPIPS trunk's ``slice<k>.<i>.*`` keys."""
    by_feature = {}
    for key in trunk.state_dict():
        _, rest = key.split(".", 1)
        by_feature[f"features.{rest}"] = key
    unexpected = [k for k in state if k not in by_feature and not k.startswith(IGNORED_PREFIXES)]
    require(not unexpected, f"{source} is not the expected torchvision checkpoint: unexpected tensors "
                            f"{', '.join(sorted(unexpected)[:8])}.")
    return {by_feature[k]: v for k, v in state.items() if k in by_feature}


def load_lpips(net: str = "alex", backbone: str | None = None, random_backbone: bool = False,
               precision: Precision = "fp32") -> PerceptualDistance:
    """LPIPS v0.1 with ``net`` ∈ {alex, vgg}: trunk from the torchvision file ``backbone``, heads from ``lpips``,
    weights then cast to ``precision`` (see :mod:`~fusedream_ops.core.precision`).

    ``random_backbone=True`` keeps a random trunk (tests and fixtures only: the distance is then meaningless).
    """
    import lpips

    require(net in NETS, f"LPIPS network must be one of {', '.join(NETS)}, got '{net}'.")
    require(random_backbone or backbone is not None,
            f"LPIPS ({net}) needs a backbone file ({BACKBONE_FILES[net][0]}).")
    with no_grad_normal_tensors(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
        heads = _lpips_heads(net)
        head_module = nn.ModuleDict({f"lin{i}": lin for i, lin in enumerate(model.lins)})
        check_state_dict(head_module, heads, f"lpips' bundled {net} heads")
        head_module.load_state_dict(heads, strict=True)
        if not random_backbone:
            state = _trunk_state(model.net, read_state_dict(backbone), f"LPIPS backbone '{backbone}'")
            check_state_dict(model.net, state, f"LPIPS backbone '{backbone}' ({net})")
            model.net.load_state_dict(state, strict=True)
        cast_frozen(model, precision, "vae")
    return PerceptualDistance(model, net)
