"""The Kandinsky 2.2 decoder loop on a tiny real UNet + MoVQ, checked against diffusers' own pipeline."""
import contextlib
import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.ovi.decode import decode_image_embeds
from fusedream_pack.fusedream_ops.safety.scheduler_config import require_scheduler_config
from testkit import kandinsky_models as km

D = 32


@pytest.fixture(scope="module")
def embeds():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, D, generator=g), torch.randn(1, D, generator=g)


def test_output_is_a_batch_of_images_in_0_1(embeds):
    positive, negative = embeds
    images = decode_image_embeds(km.decoder(), positive, negative, steps=1, width=64, height=128, seed=1,
                                 images_per_embed=2)
    assert images.shape == (4, 3, 128, 64) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0.01


def test_same_seed_same_image_other_seed_other_image(embeds):
    positive, negative = embeds
    a, b, c = (decode_image_embeds(km.decoder(), positive[:1], negative, steps=1, width=64, height=64, seed=s)
               for s in (7, 7, 8))
    assert torch.equal(a, b) and (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("guidance", [4.0, 1.0])
def test_matches_diffusers_kandinsky_v22_pipeline(embeds, guidance):
    from diffusers import KandinskyV22Pipeline

    positive, negative = embeds[0][:1], embeds[1]
    dec = km.decoder()
    ours = decode_image_embeds(dec, positive, negative, steps=2, guidance=guidance, width=64, height=64, seed=5)
    pipe = KandinskyV22Pipeline(unet=dec.unet, scheduler=dec.make_scheduler(), movq=dec.movq)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(5)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    with torch.no_grad():
        theirs = pipe(image_embeds=positive, negative_image_embeds=negative, height=64, width=64,
                      num_inference_steps=2, guidance_scale=guidance, generator=generator, latents=latents,
                      output_type="pt").images
    assert torch.allclose(ours, (theirs * 0.5 + 0.5).clamp(0, 1), atol=1e-5)


def test_every_step_is_reported_with_previews_on_schedule_and_the_final_image_last(embeds):
    steps = []
    images = decode_image_embeds(km.decoder(), embeds[0][:1], embeds[1], steps=3, width=64, height=64, seed=0,
                                 preview_every=2, on_step=steps.append)
    assert [s.step for s in steps] == [1, 2, 3] and all(s.total == 3 for s in steps)
    assert [s.image is not None for s in steps] == [False, True, True]
    assert torch.equal(steps[-1].image, images)
    timesteps = [s.values["timestep"] for s in steps]
    assert timesteps == sorted(timesteps, reverse=True)
    assert "x0_change" not in steps[0].values and all(s.values["x0_change"] > 0 for s in steps[1:])


def test_a_raising_callback_cancels_between_steps(embeds):
    seen = []

    def on_step(step):
        seen.append(step.step)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        decode_image_embeds(km.decoder(), embeds[0][:1], embeds[1], steps=5, width=64, height=64, on_step=on_step)
    assert seen == [1]


@pytest.mark.parametrize("width,height,name", [(100, 64, "width"), (64, 96, "height"), (0, 64, "width")])
def test_size_not_a_multiple_of_64_is_refused_with_the_nearest_sizes(embeds, width, height, name):
    with pytest.raises(FuseDreamError, match=f"{name} must be a multiple of 64"):
        decode_image_embeds(km.decoder(), embeds[0], embeds[1], steps=1, width=width, height=height)


def test_embedding_width_of_another_model_is_refused(embeds):
    with pytest.raises(FuseDreamError, match="image_embeds has 1280 dimensions but the decoder's UNet expects 32"):
        decode_image_embeds(km.decoder(), torch.randn(1, 1280), embeds[1], steps=1, width=64, height=64)
    with pytest.raises(FuseDreamError, match="negative_embeds has 16 dimensions"):
        decode_image_embeds(km.decoder(), embeds[0], torch.randn(1, 16), steps=1, width=64, height=64)


def test_negative_batch_must_be_one_or_match(embeds):
    with pytest.raises(FuseDreamError, match="negative_embeds must hold 1 or 2"):
        decode_image_embeds(km.decoder(), embeds[0], torch.randn(3, D), steps=1, width=64, height=64)


def test_runs_inside_inference_mode_like_a_comfyui_node(embeds):
    with torch.inference_mode():
        images = decode_image_embeds(km.decoder(), embeds[0][:1], embeds[1], steps=1, width=64, height=64)
    assert images.shape == (1, 3, 64, 64)


@contextlib.contextmanager
def unet_calls(decoder):
    """Counts the UNet's forward calls (a hook on the real module): 0 means a refusal came before any work."""
    calls = []
    handle = decoder.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def test_steps_at_the_kandinsky_schedulers_training_timesteps_is_refused_naming_the_range_one_below_runs(embeds):
    """The Kandinsky 2.2 decoder's DDPM config ('leading' spacing, steps_offset 1, 1000 timesteps) spaces 1000 steps
    as timesteps 1000…1: timestep 1000 indexes past its 1000 noise levels (diffusers' own pipeline fails the same
    way). Checked: without the timestep check, steps=1000 raised "index 1000 is out of bounds" from scheduler.step
    after a UNet call."""
    dec = km.decoder()
    assert dec.make_scheduler().config.num_train_timesteps == 1000
    for steps in (1000, 1001):
        with unet_calls(dec) as calls, pytest.raises(
                FuseDreamError, match=rf"^\[FuseDream\] steps \({steps}\) .*steps that run with it: 1–999\.$"):
            decode_image_embeds(dec, embeds[0][:1], embeds[1], steps=steps, width=64, height=64)
        assert calls == []
    reported = []
    decode_image_embeds(dec, embeds[0][:1], embeds[1], steps=999, width=64, height=64, on_step=reported.append)
    assert len(reported) == 999 and reported[0].values["timestep"] == 999.0


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(st.sampled_from(["DDPMScheduler", "DDIMScheduler", "UnCLIPScheduler"]), st.integers(1, 12),
       st.sampled_from(["leading", "linspace", "trailing"]), st.integers(0, 3), st.data())
def test_any_steps_runs_every_step_or_is_refused_naming_steps_before_the_unet(embeds, scheduler, trained, spacing,
                                                                             offset, data):
    """Decoder scheduler configs with few training timesteps, any steps up to two past them. Checked: without the
    timestep check, 'leading' configs with an offset raised IndexError and UnCLIP at steps=1 ZeroDivisionError."""
    steps = data.draw(st.integers(1, trained + 2), label="steps")
    if scheduler == "UnCLIPScheduler":  # its own settings (no spacing or offset: it spaces steps one way)
        config = {"_class_name": scheduler, "num_train_timesteps": trained, "variance_type": "fixed_small_log",
                  "prediction_type": "epsilon"}
    else:
        config = {**km.decoder().scheduler_config, "_class_name": scheduler, "num_train_timesteps": trained,
                  "timestep_spacing": spacing, "steps_offset": offset}
    config = require_scheduler_config(config, "a test config")
    dec = dataclasses.replace(km.decoder(), scheduler_config=config)
    reported = []
    with unet_calls(dec) as calls:
        try:
            images = decode_image_embeds(dec, embeds[0][:1], embeds[1], steps=steps, width=64, height=64,
                                         on_step=reported.append)
        except FuseDreamError as exc:
            assert f"steps ({steps}) cannot run" in str(exc) and "steps that run with it: " in str(exc)
            assert calls == []
            could_run = steps <= trained and not (scheduler == "UnCLIPScheduler" and steps == 1)
            assert not could_run or (spacing == "leading" and offset > 0 and scheduler != "UnCLIPScheduler"), exc
            return
    assert len(reported) == steps == len(calls) and images.isfinite().all() and 0 <= images.min() <= images.max() <= 1
