"""The two non-optimizing priors OVI is compared with: TextEmb and Kandinsky 2.2's trained diffusion prior.

TextEmb (the paper's baseline) uses the projected text embedding itself as the image embedding. The trained prior is
diffusers' ``KandinskyV22PriorPipeline`` run on the user's local ``prior/`` weights, seeded, reporting every step.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..core.autograd import no_grad_normal_tensors
from ..core.errors import require
from ..core.progress import StepCallback, report
from ..models.kandinsky import KandinskyEncoders, TextEmbedding, TrainedPrior


def text_as_image_embeds(text: TextEmbedding) -> torch.Tensor:
    """TextEmb: ``[B,D]`` text embeddings used unchanged as image embeddings."""
    return text.text_embeds.detach().float().cpu().clone()


def run_trained_prior(encoders: KandinskyEncoders, prior: TrainedPrior, prompts: list[str],
                      negative_prompt: Optional[str] = None, steps: int = 25, guidance: float = 4.0, seed: int = 0,
                      on_step: Optional[StepCallback] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image_embeds [B,D], negative_embeds [B,D])`` from the trained prior; the negative is the prior's output for
    ``negative_prompt``, or the zero-image embedding when there is none (diffusers' default)."""
    from diffusers import KandinskyV22PriorPipeline, UnCLIPScheduler
    from transformers import CLIPImageProcessor

    require(steps >= 2, f"steps must be at least 2 (the prior's UnCLIP scheduler divides by steps - 1), got {steps}.")
    require(len(prompts) > 0 and all(isinstance(p, str) for p in prompts), "prompt must be non-empty text.")
    require(int(prior.prior.config.embedding_dim) == encoders.embed_dim,
            f"the prior makes {prior.prior.config.embedding_dim}-d embeddings but the encoders project to "
            f"{encoders.embed_dim}; they must come from the same prior folder.")
    processor = CLIPImageProcessor(size={"shortest_edge": encoders.image_size},
                                   crop_size={"height": encoders.image_size, "width": encoders.image_size},
                                   image_mean=list(encoders.image_mean), image_std=list(encoders.image_std))
    pipe = KandinskyV22PriorPipeline(prior=prior.prior, image_encoder=encoders.image_encoder,
                                     text_encoder=encoders.text_encoder, tokenizer=encoders.tokenizer,
                                     scheduler=UnCLIPScheduler.from_config(prior.scheduler_config),
                                     image_processor=processor)
    pipe.set_progress_bar_config(disable=True)

    def step_end(_pipe, i, _t, kwargs):
        report(on_step, i + 1, steps)
        return kwargs

    negative = None if not negative_prompt else [negative_prompt] * len(prompts)
    with no_grad_normal_tensors():
        out = pipe(list(prompts), negative_prompt=negative, num_inference_steps=steps, guidance_scale=guidance,
                   generator=torch.Generator().manual_seed(int(seed)), callback_on_step_end=step_end)
    return out.image_embeds.float().cpu(), out.negative_image_embeds.float().cpu()
