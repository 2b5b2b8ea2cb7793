"""Exact, cheaper forms of two layers of the frozen models, swapped in after loading.

Both keep the original ``weight``/``bias`` parameters under the same names, so state dicts (and saving) are
unchanged.

- A ViT's patch embedding is a convolution with stride = kernel size and no bias: every output is one dot product
  with one non-overlapping patch. As a single matmul over the unfolded patches its backward to the image is a
  matmul too; oneDNN's convolution backward for a 32×32 stride ran at about 20 GFLOP/s on a 2-core CPU
  (0.57 s of a 50-copy step), the matmul at the machine's matmul rate. Equal to the convolution to float rounding.
- BigGAN-deep's output convolution computes ``channel_width`` channels (128 at 256 px) of which the generator keeps
  the first 3 (``z[:, :3]``): computing only those 3 is exact and saves 97 % of that layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbedding(nn.Module):
    """``Conv2d(c, d, kernel=p, stride=p, bias=False)`` as ``patches [B·g², c·p²] @ W [c·p², d]``.

    Returns ``[B, d, gh, gw]`` like the convolution."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight = conv.weight
        self.patch = tuple(conv.kernel_size)

    @staticmethod
    def fits(conv: nn.Module) -> bool:
        return (type(conv) is nn.Conv2d and conv.bias is None and tuple(conv.stride) == tuple(conv.kernel_size)
                and conv.padding in ((0, 0), "valid") and tuple(conv.dilation) == (1, 1) and conv.groups == 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ph, pw = self.patch
        gh, gw = h // ph, w // pw
        patches = x[:, :, :gh * ph, :gw * pw].reshape(b, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)
        out = patches.reshape(b * gh * gw, c * ph * pw) @ self.weight.reshape(self.weight.shape[0], -1).t()
        return out.view(b, gh, gw, -1).permute(0, 3, 1, 2)


class LeadingChannelsConv2d(nn.Module):
    """A convolution of which only the first ``keep`` output channels are used, computing only those."""

    def __init__(self, conv: nn.Conv2d, keep: int):
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.keep = keep
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    @staticmethod
    def fits(conv: nn.Module) -> bool:
        return type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and conv.groups == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias[:self.keep]
        return F.conv2d(x, self.weight[:self.keep], bias, self.stride, self.padding, self.dilation, self.groups)


def use_patch_matmul(visual: nn.Module) -> None:
    """Swap an open_clip ViT's ``conv1`` patch embedding for :class:`PatchEmbedding` (no-op if it does not fit)."""
    conv = getattr(visual, "conv1", None)
    if conv is not None and PatchEmbedding.fits(conv):
        visual.conv1 = PatchEmbedding(conv)


def use_rgb_only_output(generator: nn.Module) -> None:
    """Swap a pytorch-pretrained-biggan ``Generator.conv_to_rgb`` (spectral norm folded) for one computing the 3
    channels the generator keeps (no-op while spectral norm is still attached or if it does not fit)."""
    conv = getattr(generator, "conv_to_rgb", None)
    if conv is not None and LeadingChannelsConv2d.fits(conv) and not hasattr(conv, "weight_orig"):
        generator.conv_to_rgb = LeadingChannelsConv2d(conv, 3)
