"""The Kandinsky 2.2 decoder: image embedding -> image, by denoising MoVQ latents with the UNet.

Written after diffusers' ``KandinskyV22Pipeline.__call__``: classifier-free guidance when ``guidance > 1`` with the
negative embedding as the unconditional branch (``[negative, positive]`` batched in one UNet call), the UNet
conditioned only through ``added_cond_kwargs={"image_embeds": ...}`` (no text), the learned-variance channels of the
positive branch kept for schedulers that use them and dropped otherwise, and ``movq.decode(latents,
force_not_quantize=True)`` mapped from [-1,1] to [0,1]. Differences: sizes must be multiples of 64 (diffusers
silently rounds up), a step count the scheduler cannot run is refused before any work (diffusers fails at the first
``scheduler.step``, e.g. at 1000 steps of the Kandinsky 2.2 decoder's own config), one ``torch.Generator`` on the
CPU draws all noise so a seed gives the same image on every device, and each step is reported so a caller can show
progress and cancel between steps: the timestep, ``x0_change`` (mean absolute change of the predicted clean latents
since the previous step, which falls as the image settles) and, every ``preview_every`` steps, a preview of the
predicted clean image.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..core.autograd import no_grad_normal_tensors
from ..core.errors import FuseDreamError, require
from ..core.progress import StepCallback, report
from ..models.kandinsky import KandinskyDecoder, require_embed_dim

SIZE_MULTIPLE = 64


def check_size(width: int, height: int) -> None:
    """Refuse (rather than silently round) sizes that are not positive multiples of 64."""
    for name, v in (("width", width), ("height", height)):
        lower = max(SIZE_MULTIPLE, v // SIZE_MULTIPLE * SIZE_MULTIPLE)
        require(v >= SIZE_MULTIPLE and v % SIZE_MULTIPLE == 0,
                f"{name} must be a multiple of {SIZE_MULTIPLE} (MoVQ latents are 1/8 of the image and the UNet halves "
                f"them three times), got {v}; use {lower} or {lower + SIZE_MULTIPLE}.")


def _steps_problem(scheduler, steps: int) -> Optional[str]:
    """Why ``scheduler`` cannot run ``steps`` steps, or None: every timestep it spaces them on must index one of its
    ``num_train_timesteps`` noise levels. 'leading' spacing adds ``steps_offset`` after spacing, so the Kandinsky
    2.2 decoder's config (offset 1) spaces 1000 steps as 1000…1, past its last level (999); UnCLIP divides by
    steps − 1."""
    trained = int(scheduler.config.num_train_timesteps)
    if steps > trained:
        return f"more than the {trained} timesteps it was trained with"
    try:
        scheduler.set_timesteps(steps)
    except (ValueError, ZeroDivisionError) as exc:
        return f"it cannot space them ({type(exc).__name__}: {exc})"
    last = int(scheduler.timesteps.max())
    if last >= trained:
        return f"they would start at timestep {last}, past its last one ({trained - 1})"
    return None


def _spans(values: list[int], most: int = 8) -> str:
    """``[1, 2, 3, 7, 9, 10]`` → ``"1–3, 7, 9–10"`` (at most ``most`` spans, then ``…``)."""
    spans: list[list[int]] = []
    for v in values:
        if spans and v == spans[-1][1] + 1:
            spans[-1][1] = v
        else:
            spans.append([v, v])
    text = ", ".join(f"{a}–{b}" if b > a else f"{a}" for a, b in spans[:most])
    return (text + (", …" if len(spans) > most else "")) or "none (fix its config)"


def require_steps(scheduler, steps: int, source: str):
    """``scheduler`` (a decoder's, from ``source``), after refusing a step count it cannot run; the error names the
    step counts it can run. Cheap (no model involved), so callers check before any work and the decode again."""
    require(steps >= 1, f"steps must be at least 1, got {steps}.")
    problem = _steps_problem(scheduler, steps)
    if problem is None:
        return scheduler
    config = scheduler.config
    settings = ", ".join(f"{k} {getattr(config, k)!r}" for k in ("num_train_timesteps", "timestep_spacing",
                                                                 "steps_offset") if hasattr(config, k))
    usable = [n for n in range(1, int(config.num_train_timesteps) + 1) if _steps_problem(scheduler, n) is None]
    raise FuseDreamError(f"steps ({steps}) cannot run with the {type(scheduler).__name__} of {source} ({settings}): "
                         f"{problem}; steps that run with it: {_spans(usable)}.")


def check_decode(decoder: KandinskyDecoder, steps: int, width: int, height: int, images_per_embed: int = 1):
    """Everything about a decode that is known before its embeddings: refused before any model moves or runs.
    Returns the fresh scheduler the decode uses."""
    require(images_per_embed >= 1, f"images_per_embed must be at least 1, got {images_per_embed}.")
    check_size(width, height)
    return require_steps(decoder.make_scheduler(), steps, f"'{decoder.folder}/scheduler'")


def movq_to_image(decoder: KandinskyDecoder, latents: torch.Tensor) -> torch.Tensor:
    """MoVQ latents -> ``[B,3,H,W]`` float32 in 0..1."""
    image = decoder.movq.decode(latents, force_not_quantize=True).sample
    return (image.float() * 0.5 + 0.5).clamp(0, 1)


def decode_image_embeds(decoder: KandinskyDecoder, image_embeds: torch.Tensor, negative_embeds: torch.Tensor,
                        steps: int = 50, guidance: float = 4.0, width: int = 512, height: int = 512, seed: int = 0,
                        images_per_embed: int = 1, preview_every: int = 0,
                        on_step: Optional[StepCallback] = None) -> torch.Tensor:
    """Images ``[B·images_per_embed,3,H,W]`` (float32, CPU, 0..1) for embeddings ``[B,D]``; ``negative_embeds`` is
    ``[1,D]`` (shared) or ``[B,D]``. ``preview_every=0`` never decodes intermediate previews (each costs a MoVQ
    decode); the last step always carries the final image."""
    scheduler = check_decode(decoder, steps, width, height, images_per_embed)
    dim = decoder.embed_dim
    require_embed_dim(image_embeds, dim, "image_embeds", "the decoder's UNet")
    require_embed_dim(negative_embeds, dim, "negative_embeds", "the decoder's UNet")
    batch = image_embeds.shape[0]
    require(negative_embeds.shape[0] in (1, batch),
            f"negative_embeds must hold 1 or {batch} embeddings (one per image embedding), got {negative_embeds.shape[0]}.")

    unet = decoder.unet
    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    channels = int(unet.config.in_channels)
    scale = decoder.movq_scale
    with no_grad_normal_tensors():
        positive = image_embeds.to(device, dtype).repeat_interleave(images_per_embed, 0)
        negative = negative_embeds.to(device, dtype).expand(batch, -1).repeat_interleave(images_per_embed, 0)
        cfg = guidance > 1.0
        embeds = torch.cat([negative, positive]) if cfg else positive

        scheduler.set_timesteps(steps, device=device)
        generator = torch.Generator().manual_seed(int(seed))
        shape = (positive.shape[0], channels, height // scale, width // scale)
        latents = torch.randn(shape, generator=generator).to(device, dtype) * scheduler.init_noise_sigma
        learned_variance = getattr(scheduler.config, "variance_type", None) in ("learned", "learned_range")

        timesteps = scheduler.timesteps
        previous_x0 = None
        for i, t in enumerate(timesteps):
            model_input = torch.cat([latents, latents]) if cfg else latents
            pred = unet(sample=model_input, timestep=t, encoder_hidden_states=None,
                        added_cond_kwargs={"image_embeds": embeds}, return_dict=False)[0]
            if cfg:
                noise, variance = pred.split(channels, dim=1)
                noise_uncond, noise_cond = noise.chunk(2)
                pred = torch.cat([noise_uncond + guidance * (noise_cond - noise_uncond), variance.chunk(2)[1]], dim=1)
            if not learned_variance:
                pred = pred[:, :channels]
            out = scheduler.step(pred, t, latents, generator=generator)
            latents = out.prev_sample
            x0 = getattr(out, "pred_original_sample", None)
            values = {"timestep": float(t)}
            if x0 is not None and previous_x0 is not None:
                values["x0_change"] = float((x0 - previous_x0).float().abs().mean())
            previous_x0 = x0
            last = i == len(timesteps) - 1
            preview = None
            if last:
                preview = movq_to_image(decoder, latents)
            elif preview_every > 0 and (i + 1) % preview_every == 0 and x0 is not None:
                preview = movq_to_image(decoder, x0)
            report(on_step, i + 1, len(timesteps), values, image=preview)
        return preview.cpu()
