"""A tiny class-conditional BigGAN-deep that draws toy-world objects, trained as a neural renderer.

The architecture is pytorch-pretrained-biggan's ``BigGAN`` with a small config (32×32, 16 classes =
shape × colour, z_dim 16). Instead of adversarial training (unreliable on a CPU in minutes) the generator
regresses the procedural renderer: the first six coordinates of z, pushed through the normal CDF
rescaled so that z ∈ [-2, 2] covers 0..1, are the object's x, y, size, background level, stripe
amplitude and stripe angle (:func:`world.render_params`); the other coordinates are ignored. So every
z ~ N(0, I) clamped to [-2, 2] decodes to a valid world image, and the latent space is smooth in
position, which is what FuseDream's latent search has to navigate.

Training runs on the plain weights (spectral norm removed: with it, a few thousand CPU steps are not
enough); :func:`to_spectral_norm_checkpoint` then stores every weight W in the checkpoint's spectral-norm
form (``weight_orig`` = W, ``weight_v`` = W's top right singular vector, ``weight_u`` = Wv/|Wv|², so the
eval-mode weight ``weight_orig / (u·W v)`` is exactly W for every loader of the format).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

import torch

from ..toyworld import world

Z_DIM = 16
USED_Z = 6
GENERATOR_CONFIG = {
    "output_dim": 32, "z_dim": Z_DIM, "class_embed_dim": Z_DIM, "channel_width": 8,
    "num_classes": world.NUM_CLASSES,
    "layers": [(True, 16, 16), (True, 16, 8), (True, 8, 4), (False, 4, 2), (False, 2, 1)],
    "attention_layer_position": 2, "eps": 1e-4, "n_stats": 51,
}


def build_generator():
    """The architecture with the final batch-norm's affine parameters initialised (the class leaves them empty)."""
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    model = BigGAN(BigGANConfig.from_dict(GENERATOR_CONFIG))
    with torch.no_grad():
        model.generator.bn.weight.fill_(1.0)
        model.generator.bn.bias.zero_()
    return model


def plain_weights(model) -> None:
    """Drop spectral norm from every layer (in place), keeping the initial un-normalised weights, so the
    generator trains as an ordinary network."""
    for m in model.modules():
        if hasattr(m, "weight_orig"):
            initial = m.weight_orig.detach().clone()
            torch.nn.utils.remove_spectral_norm(m)
            with torch.no_grad():
                m.weight.copy_(initial)


@torch.no_grad()
def to_spectral_norm_checkpoint(trained) -> "torch.nn.Module":
    """A fresh :func:`build_generator` model whose eval-mode function equals the plain-weight ``trained``."""
    model = build_generator()
    plain = dict(trained.named_parameters())
    plain.update(dict(trained.named_buffers()))
    for name, module in model.named_modules():
        if hasattr(module, "weight_orig"):
            w = plain[f"{name}.weight"]
            mat = w.reshape(w.shape[0], -1)
            v = torch.linalg.svd(mat, full_matrices=False).Vh[0]
            wv = mat @ v
            module.weight_orig.copy_(w)
            module.weight_v.copy_(v)
            module.weight_u.copy_(wv / wv.dot(wv))
    state = model.state_dict()
    for key, value in plain.items():
        if key in state:
            state[key].copy_(value)
    return model.eval()


def z_to_params(z: torch.Tensor) -> torch.Tensor:
    """Renderer parameters ``[B,6]`` in 0..1 from ``z [B,z_dim]``: Φ(z) rescaled so [-2, 2] → [0, 1]."""
    lo = 0.5 * (1 + math.erf(-2 / math.sqrt(2)))
    phi = 0.5 * (1 + torch.erf(z[:, :USED_Z] / math.sqrt(2)))
    return ((phi - lo) / (1 - 2 * lo)).clamp(0, 1)


def target_images(klass: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """What the generator must draw for class ``klass`` and noise ``z``: images in 0..1."""
    return world.render_params(klass, z_to_params(z))


def object_weights(klass: torch.Tensor, z: torch.Tensor, target: torch.Tensor, weight: float = 20.0) -> torch.Tensor:
    """Per-pixel loss weights ``[B,1,H,W]``: 1 on the background, ``1 + weight`` on and next to the object.

    The object covers ~5 % of the pixels; unweighted, the regression learns background and stripes first and
    draws every shape as the same blurry blob.
    """
    params = z_to_params(z)
    background = world.background(0.08 + 0.32 * params[:, 3], 0.08 * params[:, 4], math.pi * params[:, 5])
    near = ((target - background).abs().amax(1, keepdim=True) > 0.01).float()
    return 1.0 + weight * torch.nn.functional.max_pool2d(near, 3, stride=1, padding=1)


def sample_training_z(count: int, generator: torch.Generator) -> torch.Tensor:
    """N(0, I) clamped to [-2, 2], with a quarter drawn uniformly in [-2, 2] so the box edges are learnt too."""
    z = torch.randn(count, Z_DIM, generator=generator).clamp(-2, 2)
    uniform = torch.rand(count, Z_DIM, generator=generator) * 4 - 2
    pick = torch.rand(count, 1, generator=generator) < 0.25
    return torch.where(pick, uniform, z)


def train_generator(steps: int = 3000, batch: int = 32, seed: int = 2, lr: float = 2e-3,
                    log: Optional[Callable[[str], None]] = None,
                    renderer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = target_images,
                    weights: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = object_weights):
    """Regress the renderer ``renderer(klass, z)`` (images in 0..1) with a pixel-weighted (``weights(klass, z,
    target)``) L1 + L2 loss in the generator's [-1, 1] output space."""
    torch.manual_seed(seed)
    model = build_generator()
    plain_weights(model)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    start = time.time()
    for step in range(steps):
        klass = torch.randint(world.NUM_CLASSES, (batch,), generator=g)
        z = sample_training_z(batch, g)
        target01 = renderer(klass, z)
        pixel_weights = weights(klass, z, target01)
        target = target01 * 2 - 1
        onehot = torch.nn.functional.one_hot(klass, world.NUM_CLASSES).float()
        out = model(z, onehot, 1.0)
        error = out - target
        loss = ((error.abs() + error ** 2) * pixel_weights).mean() / pixel_weights.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and (step % 200 == 0 or step == steps - 1):
            log(f"generator step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - start:.0f} s)")
    return to_spectral_norm_checkpoint(model.eval())
