"""OVI, Optimization-based Visual Inversion (Dell'Erba & Bagdanov): a training-free replacement for a diffusion prior.

A few pseudo-tokens go through the prior's CLIP vision tower (ViT-bigG/14 for Kandinsky 2.2); the tokens are optimized
so the projected image embedding ``e`` points at the prompt's text embedding ``t``. The objective (minimized) is

    L = (1 - cos(e, t)) + λ_M · d_M(e) + λ_N · (1 - max_j cos(e, b_j))

with ``d_M(e) = sqrt((e-μ)ᵀ Σ⁻¹ (e-μ))`` the Mahalanobis distance to the reference images' embedding distribution and
``b_j`` the reference embeddings (nearest neighbour by cosine, re-found every step). The paper gives no formulas; these
forms are the pack's choice: with a ~1280-d embedding a typical d_M is ~sqrt(1280) ≈ 36, so the paper's λ_M = 0.009
weighs ~0.3 against a cosine loss in [0, 2], and λ_M ≥ 0.05 outweighs the text term — the collapse to the mean that
the paper reports. The best iterate (lowest L) is returned, unnormalized like the trained prior's output.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from ..core.autograd import grad_enabled
from ..core.errors import require, require_finite
from ..core.progress import StepCallback, report
from .reference_stats import ReferenceStats

TOKEN_ENTRIES = ("patches", "bare")
"""How pseudo-tokens enter the tower. ``patches``: they take the place of patch embeddings — the class token is
prepended, the first n+1 position embeddings are added, the class token's output is pooled (a real image with n
patches enters exactly like this). ``bare``: the tokens alone, no class token, no positions; the first token's output is
pooled."""
MAX_TOKENS = 8
WEIGHT_DECAY = 0.01
HALF_LOSS_SCALE = 1024.0
"""Backward runs on ``loss * HALF_LOSS_SCALE`` through an fp16/bf16 tower so small gradients do not underflow on the
way down 48 layers; Adam's update is invariant to a constant gradient scale, so nothing needs unscaling."""


def embed_pseudo_tokens(image_encoder, tokens: torch.Tensor, entry: str = "patches") -> torch.Tensor:
    """Projected image embeddings ``[B,D]`` (float32) of pseudo-tokens ``[B,n,H]`` through a transformers
    ``CLIPVisionModelWithProjection``: (class token + positions) -> pre-LN -> encoder -> post-LN(token 0) -> projection."""
    require(entry in TOKEN_ENTRIES, f"token_entry must be one of {', '.join(TOKEN_ENTRIES)}, got {entry!r}.")
    vision = image_encoder.vision_model
    dtype = vision.pre_layrnorm.weight.dtype
    x = tokens.to(dtype)
    if entry == "patches":
        emb = vision.embeddings
        cls = emb.class_embedding.to(dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + emb.position_embedding.weight[: x.shape[1] + 1].to(dtype)
    hidden = vision.encoder(inputs_embeds=vision.pre_layrnorm(x)).last_hidden_state
    return image_encoder.visual_projection(vision.post_layernorm(hidden[:, 0])).float()


def max_tokens(image_encoder) -> int:
    """At most :data:`MAX_TOKENS`, and never more tokens than the tower has patch positions."""
    return min(MAX_TOKENS, int(image_encoder.vision_model.embeddings.num_patches))


def token_scale(image_encoder) -> float:
    """RMS of the tower's position embeddings: the scale pseudo-tokens start at and are optimized in, so ``lr`` means
    the same thing for every tower."""
    return float(image_encoder.vision_model.embeddings.position_embedding.weight.float().pow(2).mean().sqrt())


@dataclass
class OviResult:
    image_embeds: torch.Tensor
    """``[1,D]`` float32 on the CPU: the best iterate's embedding, unnormalized."""
    best_step: int
    best_cosine: float
    start_cosine: float
    history: dict[str, list[float]] = field(default_factory=dict)
    """Per-step series: ``cosine`` always, ``mahalanobis`` / ``nn_cosine`` when their constraint is on, ``loss``."""


def optimize_ovi(image_encoder, text_embed: torch.Tensor, num_tokens: int = 1, steps: int = 500, lr: float = 0.1,
                 seed: int = 0, stats: Optional[ReferenceStats] = None, lambda_m: float = 0.0, lambda_n: float = 0.0,
                 token_entry: str = "patches", on_step: Optional[StepCallback] = None) -> OviResult:
    """Optimize ``num_tokens`` pseudo-tokens (AdamW, weight decay 0.01, as in SEARLE's textual inversion) so their
    embedding matches ``text_embed`` (``[D]`` or ``[1,D]``) under the constraints; ``on_step`` once per step with the
    series (no image: an embedding has none)."""
    param = next(image_encoder.parameters())
    device = param.device
    limit = max_tokens(image_encoder)
    require(1 <= num_tokens <= limit, f"num_tokens must be 1..{limit}, got {num_tokens}.")
    require(steps >= 1, f"steps must be at least 1, got {steps}.")
    require(lr > 0, f"lr must be positive, got {lr}.")
    require(lambda_m >= 0 and lambda_n >= 0, f"lambda_m and lambda_n must be >= 0, got {lambda_m}, {lambda_n}.")
    require(token_entry in TOKEN_ENTRIES, f"token_entry must be one of {', '.join(TOKEN_ENTRIES)}, got {token_entry!r}.")
    dim = int(image_encoder.config.projection_dim)
    require(text_embed.numel() == dim,
            f"text embedding has {text_embed.numel()} values but the image encoder projects to {dim}; the text and "
            "image encoders must come from the same prior folder.")
    require((lambda_m == 0 and lambda_n == 0) or stats is not None,
            "lambda_m / lambda_n > 0 need reference statistics (connect an OVI reference statistics node).")
    if stats is not None:
        require(stats.dim == dim, f"reference statistics have {stats.dim} dimensions, the image encoder {dim}; "
                                  "rebuild them with this image encoder.")

    with grad_enabled():
        target = text_embed.detach().reshape(1, dim).float().to(device).clone()
        ref = stats.to(device) if stats is not None else None
        hidden = image_encoder.vision_model.config.hidden_size
        gen = torch.Generator().manual_seed(int(seed))
        scale = token_scale(image_encoder)
        unit_tokens = torch.randn(1, num_tokens, hidden, generator=gen).to(device).requires_grad_(True)
        opt = torch.optim.AdamW([unit_tokens], lr=lr, weight_decay=WEIGHT_DECAY)
        loss_scale = HALF_LOSS_SCALE if param.dtype in (torch.float16, torch.bfloat16) else 1.0
        history: dict[str, list[float]] = {"cosine": []}
        best_loss, best_embed, best_step, best_cos = float("inf"), None, 0, 0.0
        for step in range(1, steps + 1):
            e = embed_pseudo_tokens(image_encoder, unit_tokens * scale, token_entry)
            cos = F.cosine_similarity(e, target, dim=-1)
            loss = 1 - cos
            values = {"cosine": float(cos.detach())}
            if lambda_m > 0:
                d_m = ref.mahalanobis(e)
                loss = loss + lambda_m * d_m
                values["mahalanobis"] = float(d_m.detach())
            if lambda_n > 0:
                nn_cos = ref.nearest_cosine(e)
                loss = loss + lambda_n * (1 - nn_cos)
                values["nn_cosine"] = float(nn_cos.detach())
            loss = loss.sum()
            require_finite("OVI loss", loss.detach())
            values["loss"] = float(loss.detach())
            for k, v in values.items():
                history.setdefault(k, []).append(v)
            if values["loss"] < best_loss:
                best_loss, best_embed, best_step, best_cos = values["loss"], e.detach().clone(), step, values["cosine"]
            opt.zero_grad(set_to_none=True)
            (loss * loss_scale).backward()
            opt.step()
            report(on_step, step, steps, values)
    return OviResult(best_embed.float().cpu(), best_step, best_cos, history["cosine"][0], history)
