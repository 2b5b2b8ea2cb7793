"""Kandinsky 2.2-format toy models for OVI: prior encoders (transformers layout) and a decoder (diffusers layout).

*Prior encoders.* The toy world's contrastively trained open_clip CLIP (:mod:`train_clip`), rewritten key by key
into transformers' ``CLIPVisionModelWithProjection`` / ``CLIPTextModelWithProjection`` (fused ``in_proj`` split
into q/k/v, projections transposed); both towers give the open_clip embeddings to float precision (the text tower
pools at the first end-of-text token, open_clip at the largest token id: the same position). The tokenizer folder
is written from open_clip's bundled BPE vocabulary (identical ids). Converting instead of retraining keeps one toy
CLIP for the whole world and costs nothing.

*Decoder.* A two-level MoVQ (``VQModel``; group norm, since diffusers fixes spatial norm at 32 groups, too wide
here) whose latents are fixed by construction: the encoder is trained to output the 64-px scene average-pooled to 32
px in [-1, 1], the decoder to map such a latent back to the 64-px scene. The UNet (``UNet2DConditionModel``, image-
embedding conditioning exactly as Kandinsky 2.2: ``addition_embed_type="image"``,
``encoder_hid_dim_type="image_proj"``) predicts the clean latent (``prediction_type="sample"``) from a noisy one and
the image embedding of the scene; the scheduler is DDIM, so a few denoising steps give a scene. Regressing the clean
latent instead of the noise is what makes a UNet this small train in minutes: at high noise the embedding alone must
say what to draw, which is the decoder's job. Pixels of objects (coloured, the background is grey) weigh ×21 in the
loss, as in the toy generator.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..toyworld import world

PRIOR_DIR = os.path.join("kandinsky22", "toyworld-prior")
DECODER_DIR = os.path.join("kandinsky22", "toyworld-decoder")
REFERENCE_PATH = os.path.join("ovi_reference", "toyworld.safetensors")
DECODE_SIZE = 64
REFERENCE_COUNT = 512
REFERENCE_SEED = 4321
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


# ---------------------------------------------------------------- prior encoders from the toy open_clip CLIP
def _blocks(state: dict, prefix: str, out_prefix: str, width: int) -> dict:
    out = {}
    layers = sorted({int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)})
    for i in layers:
        p, q = f"{prefix}{i}.", f"{out_prefix}.encoder.layers.{i}."
        w, b = state[p + "attn.in_proj_weight"], state[p + "attn.in_proj_bias"]
        for j, name in enumerate("qkv"):
            out[q + f"self_attn.{name}_proj.weight"] = w[width * j:width * (j + 1)]
            out[q + f"self_attn.{name}_proj.bias"] = b[width * j:width * (j + 1)]
        pairs = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
                 "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
        for a, c in pairs.items():
            out[q + c + ".weight"] = state[p + a + ".weight"]
            out[q + c + ".bias"] = state[p + a + ".bias"]
    return out


def encoders_from_open_clip(model, config: dict):
    """``(CLIPVisionModelWithProjection, CLIPTextModelWithProjection)`` holding the weights of an open_clip ``CLIP``
    built from ``config`` (:data:`train_clip.CLIP_CONFIG` layout)."""
    from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    vc, tc, dim = config["vision_cfg"], config["text_cfg"], config["embed_dim"]
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=vc["width"], intermediate_size=int(vc["width"] * vc["mlp_ratio"]), num_hidden_layers=vc["layers"],
        num_attention_heads=vc["width"] // vc["head_width"], image_size=vc["image_size"], patch_size=vc["patch_size"],
        projection_dim=dim, hidden_act="gelu"))
    v = _blocks(sd, "visual.transformer.resblocks.", "vision_model", vc["width"])
    v.update({"vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
              "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
              "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
              "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"],
              "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
              "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"],
              "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
              "visual_projection.weight": sd["visual.proj"].t()})
    vision.load_state_dict(v, strict=True)
    text = CLIPTextModelWithProjection(CLIPTextConfig(
        hidden_size=tc["width"], intermediate_size=int(tc["width"] * tc["mlp_ratio"]), num_hidden_layers=tc["layers"],
        num_attention_heads=tc["heads"], vocab_size=tc["vocab_size"], max_position_embeddings=tc["context_length"],
        projection_dim=dim, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_act="gelu"))
    t = _blocks(sd, "transformer.resblocks.", "text_model", tc["width"])
    t.update({"text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
              "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
              "text_model.final_layer_norm.weight": sd["ln_final.weight"],
              "text_model.final_layer_norm.bias": sd["ln_final.bias"],
              "text_projection.weight": sd["text_projection"].t()})
    text.load_state_dict(t, strict=True)
    return vision.eval(), text.eval()


def write_prior_folder(model, config: dict, folder: str) -> str:
    """``image_encoder/``, ``text_encoder/``, ``tokenizer/``, ``image_processor/`` (float16 safetensors)."""
    from ..models.clip_tokenizer import write_clip_tokenizer

    vision, text = encoders_from_open_clip(model, config)
    vision.half().save_pretrained(os.path.join(folder, "image_encoder"))
    text.half().save_pretrained(os.path.join(folder, "text_encoder"))
    write_clip_tokenizer(os.path.join(folder, "tokenizer"))
    size = config["vision_cfg"]["image_size"]
    os.makedirs(os.path.join(folder, "image_processor"), exist_ok=True)
    with open(os.path.join(folder, "image_processor", "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": size, "width": size},
                   "size": {"shortest_edge": size}, "do_normalize": True, "image_mean": CLIP_MEAN,
                   "image_std": CLIP_STD, "resample": 3}, f, indent=2)
    return folder


# ---------------------------------------------------------------- the decoder
def build_movq():
    from diffusers import VQModel

    return VQModel(block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=3,
                   down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                   layers_per_block=1, norm_num_groups=8, norm_type="group", num_vq_embeddings=16, vq_embed_dim=3,
                   mid_block_add_attention=False)


def build_unet(embed_dim: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=DECODE_SIZE // 2, in_channels=3, out_channels=6,
        down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"),
        up_block_types=("ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", addition_embed_type="image", encoder_hid_dim=embed_dim,
        encoder_hid_dim_type="image_proj", cross_attention_dim=64, attention_head_dim=32,
        resnet_time_scale_shift="scale_shift", class_embed_type=None, norm_num_groups=8)


def build_scheduler():
    """DDIM over Kandinsky 2.2's training betas (linear 0.00085..0.012, leading spacing, offset 1), predicting x0."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
                         clip_sample=False, prediction_type="sample", timestep_spacing="leading", steps_offset=1,
                         set_alpha_to_one=False)


def latent_of(images: torch.Tensor) -> torch.Tensor:
    """The MoVQ latent a 64-px scene should have: the scene average-pooled to 32 px, in [-1, 1]."""
    return F.avg_pool2d(images, 2) * 2 - 1


def object_weight(images: torch.Tensor, weight: float = 20.0) -> torch.Tensor:
    """``[B,1,H,W]``: 1 on the grey background, ``1 + weight`` on coloured (object) pixels."""
    spread = images.max(1, keepdim=True).values - images.min(1, keepdim=True).values
    return 1 + weight * (spread > 0.1).float()


def train_movq(steps: int, batch: int = 32, seed: int = 11, lr: float = 2e-3,
               log: Optional[Callable[[str], None]] = None):
    torch.manual_seed(seed)
    movq = build_movq().train()
    opt = torch.optim.Adam(movq.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    g = torch.Generator().manual_seed(seed)
    start = time.time()
    for step in range(steps):
        x = world.sample_scenes(batch, seed * 1_000_003 + step, 0.3, size=DECODE_SIZE).images
        target = latent_of(x)
        enc = movq.quant_conv(movq.encoder(x * 2 - 1))
        noisy = target + 0.05 * torch.randn(target.shape, generator=g)
        dec = movq.decoder(movq.post_quant_conv(noisy)) * 0.5 + 0.5
        loss = F.mse_loss(enc, target) + ((dec - x).abs() * object_weight(x)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log(f"movq step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - start:.0f} s)")
    return movq.eval()


def train_unet(image_encoder, steps: int, batch: int = 32, seed: int = 12, lr: float = 2e-3,
               log: Optional[Callable[[str], None]] = None):
    """Clean-latent regression from (noisy latent, timestep, image embedding of the scene)."""
    from ..models.kandinsky import KandinskyEncoders

    encode = KandinskyEncoders(image_encoder, None, None, "").encode_images
    torch.manual_seed(seed)
    unet = build_unet(int(image_encoder.config.projection_dim)).train()
    alphas = build_scheduler().alphas_cumprod
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    g = torch.Generator().manual_seed(seed)
    start = time.time()
    for step in range(steps):
        x = world.sample_scenes(batch, seed * 1_000_003 + step, 0.3, size=DECODE_SIZE).images
        with torch.no_grad():
            embeds = encode(x, batch_size=batch)
        x0 = latent_of(x)
        t = torch.randint(0, len(alphas), (batch,), generator=g)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=g)
        pred = unet(xt, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": embeds}).sample[:, :3]
        loss = ((pred - x0) ** 2 * object_weight(F.avg_pool2d(x, 2))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log(f"decoder unet step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - start:.0f} s)")
    return unet.eval()


def write_decoder_folder(movq, unet, folder: str) -> str:
    """``unet/``, ``movq/`` (float16 safetensors) and ``scheduler/``."""
    unet.half().save_pretrained(os.path.join(folder, "unet"))
    movq.half().save_pretrained(os.path.join(folder, "movq"))
    build_scheduler().save_pretrained(os.path.join(folder, "scheduler"))
    return folder


def reference_images(count: int = REFERENCE_COUNT, seed: int = REFERENCE_SEED) -> torch.Tensor:
    """Real world scenes (single objects and pairs) whose embeddings are OVI's reference statistics."""
    return world.sample_scenes(count, seed, two_object_fraction=0.3, size=DECODE_SIZE).images


def write_reference_stats(encoders, path: str) -> str:
    """Reference statistics of :func:`reference_images` through the pack's own op (Ledoit–Wolf shrinkage)."""
    from ..ovi.reference_stats import build_reference_stats, save_reference_stats

    stats = build_reference_stats(encoders.encode_images(reference_images()))
    return save_reference_stats(stats, path, source=f"toy world scenes, seed {REFERENCE_SEED}")
