"""Exact, cheaper forms of layers of the frozen models, swapped in after loading.

Each keeps the original parameters and buffers under the same names, so state dicts (and saving) are unchanged.

- A ViT's patch embedding is a convolution with stride = kernel size and no bias: every output is one dot product
  with one non-overlapping patch. As a single matmul over the unfolded patches its backward to the image is a
  matmul too; oneDNN's convolution backward for a 32×32 stride ran at about 20 GFLOP/s on a 2-core CPU
  (0.57 s of a 50-copy step), the matmul at the machine's matmul rate. Equal to the convolution to float rounding.
- BigGAN-deep's output convolution computes ``channel_width`` channels (128 at 256 px) of which the generator keeps
  the first 3 (``z[:, :3]``): computing only those 3 is exact and saves 97 % of that layer.
- BigGAN's batch norm ``(x − μ)/√(σ² + ε)·(1 + γ(y)) + β(y)`` followed by its ReLU is one ``addcmul`` with the
  per-image, per-channel gain and shift folded beforehand, and an in-place ReLU: 2 passes over the feature map
  instead of 5, 2 saved tensors instead of 4. The gain ``(1 + γ(y))/√(σ² + ε)`` and shift are computed in fp32
  whatever the model's dtype (the layer's weights and statistics stay fp32 through casts; the conditioning ``y``
  stays fp32: the generator's first linear casts the fp32 latents to its own dtype) and rounded once to the
  feature map's dtype. Keeping the whole affine in fp32 as autocast does (and fp32 feature maps between bf16
  convolutions) was measured on the tiny test models (8 prompt/seed pairs, bf16 generator and CLIP): it did not
  raise the latents' gradient cosine to fp32 (0.9836–0.9996 against 0.9854–0.9995 with the library's bf16 batch
  norm; ``torch.autocast`` 0.985–0.9999), because bf16's convolutions bound it, and it slowed the bf16 no-grad
  forward top-k uses (1.45× in one loaded run).
- open_clip's QuickGELU ``x·σ(1.702x)`` is 3 kernels forward, 5 backward and 3 saved tensors under autograd; with
  ``u = 1.702x`` it equals ``silu(u)/1.702`` whose derivative in x is ``silu'(u)``: one fused ``silu_backward``
  kernel and one saved tensor.
- ``nn.MultiheadAttention(batch_first=True)`` self-attention transposes its input to sequence-first, so its input
  projection runs as a batched matmul over a strided view, and it splits q/k/v with copies; here the projection is
  one matmul on the contiguous batch and q/k/v are views fed to ``scaled_dot_product_attention``.
"""
from __future__ import annotations

import math

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


class BatchNormReLU(nn.Module):
    """pytorch-pretrained-biggan's ``BigGANBatchNorm`` (conditional or not) and the ReLU after it: gain and shift
    folded in fp32, applied in ``x``'s dtype.

    ``forward(x, truncation, condition_vector=None)`` like the original; returns ``relu(bn(x))`` in ``x``'s dtype.
    The owner's ReLU becomes an identity (:func:`use_fused_batch_norm`)."""

    def __init__(self, bn: nn.Module):
        super().__init__()
        self.register_buffer("running_means", bn.running_means)
        self.register_buffer("running_vars", bn.running_vars)
        self.step_size, self.eps, self.conditional = bn.step_size, bn.eps, bn.conditional
        if self.conditional:
            self.scale, self.offset = bn.scale, bn.offset
        else:
            self.weight, self.bias = bn.weight, bn.bias
        self.float()

    def _statistics(self, truncation: float) -> tuple[torch.Tensor, torch.Tensor]:
        coef, start = math.modf(truncation / self.step_size)
        start = int(start)
        if coef == 0.0:
            return self.running_means[start], self.running_vars[start]
        return (self.running_means[start] * coef + self.running_means[start + 1] * (1 - coef),
                self.running_vars[start] * coef + self.running_vars[start + 1] * (1 - coef))

    def forward(self, x: torch.Tensor, truncation: float, condition_vector: torch.Tensor | None = None):
        mean, var = self._statistics(truncation)
        inv_std = torch.rsqrt(var + self.eps)
        if self.conditional:
            y = condition_vector.float()
            gain = (1 + self.scale(y)) * inv_std
            shift = self.offset(y) - mean * gain
            gain, shift = gain[:, :, None, None], shift[:, :, None, None]
        else:
            gain = self.weight * inv_std
            shift = (self.bias - mean * gain)[:, None, None]
            gain = gain[:, None, None]
        return torch.addcmul(shift.to(x.dtype), x, gain.to(x.dtype)).relu_()

    def _apply(self, fn, recurse=True):
        """Follow device moves, keep fp32 through dtype casts (``model.to(torch.bfloat16)``, ``.half()``)."""
        target = fn(torch.empty(0, device=self.running_means.device))
        if target.dtype == torch.float32:
            return super()._apply(fn, recurse)
        return super()._apply(lambda t: t.to(target.device) if t.is_floating_point() else fn(t), recurse)


class CastInputLinear(nn.Linear):
    """A linear layer that casts its input to its weight's dtype (BigGAN's first layer, fed by fp32 latents)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias)


class _QuickGELUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        u = x * 1.702
        ctx.save_for_backward(u)
        return torch.sigmoid(u).mul_(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return torch.ops.aten.silu_backward(grad, u)


class QuickGELU(nn.Module):
    """``x·σ(1.702x)`` with the one-kernel backward ``silu'(1.702x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _QuickGELUFunction.apply(x)


class BatchFirstSelfAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention(batch_first=True)`` whose self-attention without mask or weights is one input matmul
    on the contiguous batch and ``scaled_dot_product_attention`` on q/k/v views; anything else runs the original.

    Swapped in by changing the class of the existing module (:func:`use_fast_transformer`): same parameters."""

    @staticmethod
    def fits(attn: nn.Module) -> bool:
        return (type(attn) is nn.MultiheadAttention and attn.batch_first and attn._qkv_same_embed_dim
                and attn.in_proj_bias is not None and attn.bias_k is None and not attn.add_zero_attn
                and attn.dropout == 0.0)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not (key is query and value is query and query.dim() == 3 and key_padding_mask is None
                and attn_mask is None and not need_weights and not is_causal):
            return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask,
                                   average_attn_weights, is_causal)
        n, length, width = query.shape
        qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(n, length, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, width)
        return F.linear(out, self.out_proj.weight, self.out_proj.bias), None


def use_patch_matmul(visual: nn.Module) -> None:
    """Swap an open_clip ViT's ``conv1`` patch embedding for :class:`PatchEmbedding` (no-op if it does not fit)."""
    conv = getattr(visual, "conv1", None)
    if conv is not None and PatchEmbedding.fits(conv):
        visual.conv1 = PatchEmbedding(conv)


def use_fast_transformer(model: nn.Module) -> None:
    """Swap every open_clip QuickGELU for :class:`QuickGELU` and every fitting batch-first self-attention for
    :class:`BatchFirstSelfAttention` (only the class changes: parameters, state dict and results stay)."""
    for module in list(model.modules()):
        if BatchFirstSelfAttention.fits(module):
            module.__class__ = BatchFirstSelfAttention
        for name, child in module.named_children():
            if type(child).__name__ == "QuickGELU" and type(child).__module__.startswith("open_clip"):
                setattr(module, name, QuickGELU())


def use_fused_batch_norm(generator: nn.Module) -> None:
    """Swap every batch norm of a pytorch-pretrained-biggan ``Generator`` for :class:`BatchNormReLU` (the ReLU of
    its owner becomes an identity) and the first linear for :class:`CastInputLinear`. Idempotent."""
    for owner in list(generator.modules()):
        swapped = [name for name, child in owner.named_children() if type(child).__name__ == "BigGANBatchNorm"]
        for name in swapped:
            setattr(owner, name, BatchNormReLU(getattr(owner, name)))
        if swapped:
            owner.relu = nn.Identity()
    if type(generator.gen_z) is nn.Linear:
        generator.gen_z.__class__ = CastInputLinear


def use_rgb_only_output(generator: nn.Module) -> None:
    """Swap a pytorch-pretrained-biggan ``Generator.conv_to_rgb`` (spectral norm folded) for one computing the 3
    channels the generator keeps (no-op while spectral norm is still attached or if it does not fit)."""
    conv = getattr(generator, "conv_to_rgb", None)
    if conv is not None and LeadingChannelsConv2d.fits(conv) and not hasattr(conv, "weight_orig"):
        generator.conv_to_rgb = LeadingChannelsConv2d(conv, 3)
