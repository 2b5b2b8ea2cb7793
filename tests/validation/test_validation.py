"""Each case of issue 11's "raw, misleading or silent" list is a clear FuseDreamError naming the input (or works).

Numbers, prompts, image batches, non-finite values and Cancel in the long init loops; the command line is in
test_cli_errors.py, the property-based sweep over every node in test_node_inputs_property.py.
"""
import copy
import inspect
import json
import logging
import math

import pytest
import torch

from fusedream_pack.fusedream_ops.clipag.init_images import SmallImageGaussians, best_gaussian_samples
from fusedream_pack.fusedream_ops.composition.poisson import poisson_blend
from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.core.progress import Step
from fusedream_pack.fusedream_ops.fusedream.topk import topk_latents
from fusedream_pack.fusedream_ops.validation.images import LPIPS_MIN_SIZE
from fusedream_pack.fusedream_ops.validation.numbers import require_number
from fusedream_pack.fusedream_ops.validation.prompts import SYNTAX, parse_prompts
from fusedream_pack.nodes import NODE_CLASS_MAPPINGS, comfy
from fusedream_pack.nodes import monitor as monitor_module
from testkit.pack_values import values as pack_values
from testkit.workflows import run_node


@pytest.fixture(scope="module")
def pool(tiny_models):
    return pack_values(tiny_models)


def call(node_id, **inputs):
    return run_node(node_id, **inputs)["result"]


def refused(match, node_id, **inputs):
    with pytest.raises(FuseDreamError, match=match):
        call(node_id, **inputs)


def _optimizer(pool, **kw):
    return {"generator": pool["BIGGAN"], "basis": pool["BIGGAN_LATENT"], "objective": pool["FUSEDREAM_OBJECTIVE"],
            "steps": 1, **kw}


def _synthesis(pool, **kw):
    return {"clip": pool["FUSEDREAM_CLIP"], "size": 32, "steps": 1, "views": 1, "patches": 1, **kw}


def _broken(module: torch.nn.Module, under: str = "") -> tuple[torch.nn.Module, str]:
    """A copy of a loaded model whose first floating weight (under ``under``) holds NaN, and that weight's name."""
    bad = copy.deepcopy(module)
    name, param = next((n, p) for n, p in bad.named_parameters() if p.is_floating_point() and n.startswith(under))
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    return bad, name


# ---------------------------------------------------------------- numbers
@pytest.mark.parametrize("value", [float("nan"), -1.0, float("inf")])
def test_a_nan_or_negative_learning_rate_is_refused_by_name_with_its_range(pool, value):
    refused(r"lr must be a finite number from 1e-06 to 1, got", "FuseDreamBasisOptimizer", **_optimizer(pool, lr=value))
    refused(r"weight_decay must be a finite number from 0 to 1", "FuseDreamCLIPAGSynthesis",
            **_synthesis(pool, weight_decay=value))


@pytest.mark.parametrize("name", ["grad_clip", "input_noise", "threshold"])
@pytest.mark.parametrize("value", [float("nan"), -0.5])
def test_nan_or_negative_noise_clip_and_threshold_are_errors_not_silently_off(pool, name, value):
    refused(f"{name} must be a finite number from 0 to", "FuseDreamCLIPAGSynthesis", **_synthesis(pool, **{name: value}))


@pytest.mark.parametrize("value", [float("nan"), -0.01])
def test_nan_or_negative_latent_noise_is_an_error_not_silently_off(pool, value):
    refused("latent_noise must be a finite number from 0 to 1", "FuseDreamBasisOptimizer",
            **_optimizer(pool, latent_noise=value))


@pytest.mark.parametrize("value,message", [(2.5, "steps must be an integer from 1 to 100000, got 2.5"),
                                           (0, "got 0"), ("3", "got str '3'"), (True, "got bool")])
def test_integer_inputs_refuse_fractions_zero_and_other_types(pool, value, message):
    refused(message, "FuseDreamBasisOptimizer", **_optimizer(pool, steps=value))


def test_require_number_names_the_range_and_survives_huge_integers():
    assert require_number("x", 3.0, 1, 5, integer=True) == 3
    with pytest.raises(FuseDreamError, match=r"^\[FuseDream\] x must be a finite number above 0 and at most 1, got an "
                                             r"integer of 401 digits\.$"):
        require_number("x", 10 ** 400, 0, 1, low_open=True)
    with pytest.raises(FuseDreamError, match="tolerance must be a finite number above 0, got 0"):
        require_number("tolerance", 0, 0, low_open=True)


# ---------------------------------------------------------------- prompts
@pytest.mark.parametrize("text,parsed", [
    ("dog", [("dog", 1.0)]),
    ("dog:2\nblurry : -0.5", [("dog", 2.0), ("blurry", -0.5)]),
    ("dog:abc", [("dog:abc", 1.0)]),
    ("poster: a blue dog", [("poster: a blue dog", 1.0)]),
    ("time 10 :30", [("time 10", 30.0)]),
    ("time 10:30 :1", [("time 10:30", 1.0)]),
    ("a:1 :2", [("a:1", 2.0)]),
])
def test_only_a_number_after_the_last_colon_is_a_weight(text, parsed):
    assert parse_prompts(text) == parsed


@pytest.mark.parametrize("text,message", [
    ("dog:nan", "the weight 'nan' is not a finite number"),
    ("dog:-inf", "the weight '-inf' is not a finite number"),
    ("dog:1,5", "decimal point, not comma"),
    ("dog:1e400", "the weight 1e400 is out of range"),
    ("dog:500", "the weight 500 is out of range"),
    ("a:1:2", "ambiguous: ':2' follows a digit.*'a:1 :2' weights 'a:1' by 2"),
    ("time 10:30", "ambiguous.*'time 10 :30' weights 'time 10' by 30, 'time 10:30 :1' keeps"),
    (":2", "has a weight but no text"),
])
def test_a_colon_that_is_neither_text_nor_a_valid_weight_is_an_error(text, message):
    with pytest.raises(FuseDreamError, match=message):
        parse_prompts(text)


def test_a_weight_of_1e400_is_blamed_on_the_prompt_not_the_learning_rate(pool):
    refused("prompt line 'dog:1e400'", "FuseDreamAugCLIPObjective", clip=pool["FUSEDREAM_CLIP"], prompt="dog:1e400")
    refused("prompt line 'dog:1e400'", "FuseDreamCLIPAGSynthesis", **_synthesis(pool, prompt="dog:1e400"))


def test_the_prompt_tooltips_state_the_weight_rule():
    for node_id in ("FuseDreamAugCLIPObjective", "FuseDreamCLIPAGSynthesis"):
        assert NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()["required"]["prompt"][1]["tooltip"] == SYNTAX
    assert "'time 10:30 :1'" in SYNTAX and "-100 to 100" in SYNTAX


def test_a_prompt_longer_than_77_tokens_is_reported_and_a_short_one_is_not(pool, caplog):
    with caplog.at_level(logging.WARNING, logger="FuseDream"):
        call("FuseDreamAugCLIPObjective", clip=pool["FUSEDREAM_CLIP"], prompt="a photo of a dog\n" + "word " * 300)
    warnings = [r.getMessage() for r in caplog.records if r.name == "FuseDream"]
    assert len(warnings) == 1 and "prompt 2" in warnings[0] and "302 tokens" in warnings[0], warnings
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="FuseDream"):
        call("FuseDreamKandinsky22TextEncode", encoders=pool["KANDINSKY22_ENCODERS"], prompt="word " * 100,
             negative_prompt="")
    assert any("prompt 1" in r.getMessage() and "first 77" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- image batches
def _empty():
    return torch.rand(0, 32, 32, 3)


@pytest.mark.parametrize("node_id,name,extra", [
    ("FuseDreamFuseCrop", "foreground", {"background": torch.rand(1, 32, 32, 3)}),
    ("FuseDreamPoissonBlend", "foreground", {"background": torch.rand(1, 32, 32, 3), "mask": torch.ones(1, 32, 32)}),
    ("FuseDreamAugCLIPScore", "image", {"objective": "FUSEDREAM_OBJECTIVE"}),
    ("FuseDreamKandinsky22ImageEncode", "image", {"encoders": "KANDINSKY22_ENCODERS"}),
    ("FuseDreamLPIPSDistance", "image_a", {"image_b": torch.rand(1, 32, 32, 3), "lpips": "FUSEDREAM_LPIPS"}),
])
def test_an_empty_image_batch_is_refused_by_name(pool, node_id, name, extra):
    inputs = {k: pool[v] if isinstance(v, str) else v for k, v in extra.items()}
    refused(f"{name} is an empty batch", node_id, **{name: _empty()}, **inputs)


def test_the_decoder_and_embeds_mix_refuse_an_empty_embedding_batch(pool):
    embeds = pool["KANDINSKY22_IMAGE_EMBEDS"]
    refused(r"image_embeds is empty \(shape \(0, ", "FuseDreamKandinsky22Decoder", decoder=pool["KANDINSKY22_DECODER"],
            image_embeds=embeds[:0], negative_embeds=embeds, steps=1, width=64, height=64)
    refused(r"embeds_2 is empty \(shape \(0, ", "FuseDreamKandinsky22EmbedsMix", embeds_1=embeds, embeds_2=embeds[:0])


def test_clipag_image_init_with_an_empty_batch_is_refused_not_a_zero_division(pool):
    refused("init_image is an empty batch", "FuseDreamCLIPAGSynthesis",
            **_synthesis(pool, init="image", init_image=_empty()))


def test_lpips_refuses_images_smaller_than_its_backbone_allows_and_works_at_the_smallest(pool):
    lpips = pool["FUSEDREAM_LPIPS"]
    small = torch.rand(1, 8, 8, 3)
    refused(r"image_a is 8×8 pixels; it must be at least 31×31", "FuseDreamLPIPSDistance", image_a=small,
            image_b=small, lpips=lpips)
    side = LPIPS_MIN_SIZE[lpips.net]
    distance, _ = call("FuseDreamLPIPSDistance", image_a=torch.rand(2, side, side, 3),
                       image_b=torch.rand(1, side, side, 3), lpips=lpips)
    assert math.isfinite(distance)


def test_clipag_size_0_and_a_negative_topk_chunk_are_refused_by_name(pool):
    """Top-k's chunk 0 means "sized from free memory" (the node's default), so -1 is the invalid chunk."""
    refused("size must be an integer from 32 to 1024, got 0", "FuseDreamCLIPAGSynthesis", **_synthesis(pool, size=0))
    refused("chunk must be an integer from 0 to 512, got -1", "FuseDreamTopK", generator=pool["BIGGAN"],
            candidates=pool["BIGGAN_LATENT"], objective=pool["FUSEDREAM_OBJECTIVE"], k=1, chunk=-1)


def test_nan_pixels_are_refused_by_name(pool):
    image = torch.rand(1, 32, 32, 3)
    image[0, 3, 4, 1] = float("nan")
    refused("background holds NaN or infinite pixels", "FuseDreamFuseCrop", foreground=torch.rand(1, 32, 32, 3),
            background=image)


# ---------------------------------------------------------------- non-finite values
def test_topk_stops_at_the_first_nan_score_naming_the_candidate(pool, tiny_generator):
    latents = copy.deepcopy(pool["BIGGAN_LATENT"])
    latents.z[2, 0] = float("nan")
    with pytest.raises(FuseDreamError, match=r"top-k: candidate 2 scored nan"):
        topk_latents(tiny_generator, latents, pool["FUSEDREAM_OBJECTIVE"], 1, chunk=2)


def test_topk_and_decode_with_nan_weights_name_the_broken_weight(pool):
    generator, weight = _broken(pool["BIGGAN"], "model.generator.")
    refused(f"candidate 0 scored nan \\(the model weight '{weight}'", "FuseDreamTopK", generator=generator,
            candidates=pool["BIGGAN_LATENT"], objective=pool["FUSEDREAM_OBJECTIVE"], k=1)
    refused(f"the output 'image' holds NaN.*'{weight}'", "FuseDreamDecode", generator=generator,
            latent=pool["BIGGAN_LATENT"])


def test_a_checkpoint_with_nan_weights_is_refused_when_loaded(tiny_models, tmp_path):
    import os
    import shutil

    from safetensors.torch import load_file, save_file

    source = os.path.join(tiny_models, "biggan", "biggan-deep-256")
    target = os.path.join(tiny_models, "biggan", "nan-weights")
    shutil.copytree(source, target)
    try:
        state = load_file(os.path.join(target, "model.safetensors"))
        name = sorted(k for k, v in state.items() if v.is_floating_point() and "weight" in k)[0]
        state[name].view(-1)[0] = float("nan")
        save_file(state, os.path.join(target, "model.safetensors"))
        refused("BigGANLoader: the model weight .* holds NaN", "FuseDreamBigGANLoader", checkpoint="nan-weights")
    finally:
        shutil.rmtree(target)


def test_progress_events_never_carry_nan(monkeypatch):
    sent = []
    monkeypatch.setattr(comfy, "send_event", lambda event, payload: sent.append(json.dumps(payload, allow_nan=False)))
    monitor = monitor_module.NodeMonitor("7", 3, label="OVI")
    monitor(Step(1, 3, {"cosine": 0.5}))
    with pytest.raises(FuseDreamError, match=r"OVI 'cosine' became nan at step 2 of 3"):
        monitor(Step(2, 3, {"cosine": float("nan")}))
    with pytest.raises(FuseDreamError, match="became inf"):
        monitor(Step(3, 3, {"cosine": float("inf")}))
    assert len(sent) == 1


def test_poisson_refuses_nan_inputs_by_name():
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:20, 8:20] = float("nan")
    refused("mask holds NaN", "FuseDreamPoissonBlend", foreground=torch.rand(1, 32, 32, 3),
            background=torch.rand(1, 32, 32, 3), mask=mask)
    with pytest.raises(FuseDreamError, match="background holds NaN"):
        poisson_blend(torch.rand(1, 3, 8, 8), torch.full((1, 3, 8, 8), float("nan")), torch.ones(1, 8, 8).tril())


def test_kandinsky_nodes_refuse_nan_embeddings_by_name(pool):
    embeds = pool["KANDINSKY22_IMAGE_EMBEDS"]
    bad = embeds.clone()
    bad[0, 0] = float("nan")
    refused("image_embeds holds NaN", "FuseDreamKandinsky22Decoder", decoder=pool["KANDINSKY22_DECODER"],
            image_embeds=bad, negative_embeds=embeds, steps=1, width=64, height=64)
    refused("embeds_2 holds NaN", "FuseDreamKandinsky22EmbedsMix", embeds_1=embeds, embeds_2=bad)
    refused("clip_vision_output holds NaN", "FuseDreamKandinsky22FromCLIPVision",
            clip_vision_output={"image_embeds": bad})


def test_embeds_mix_overflow_is_an_error_naming_the_output(pool):
    huge = torch.full_like(pool["KANDINSKY22_IMAGE_EMBEDS"], 3e38)
    refused("the output 'image_embeds' holds NaN or infinite", "FuseDreamKandinsky22EmbedsMix", embeds_1=huge,
            weight_1=10.0, embeds_2=huge, weight_2=10.0)


def test_the_kandinsky_decoder_with_nan_weights_names_the_weight(pool):
    decoder = copy.copy(pool["KANDINSKY22_DECODER"])
    decoder.unet, weight = _broken(decoder.unet)
    embeds = pool["KANDINSKY22_IMAGE_EMBEDS"]
    refused(f"the output 'image' holds NaN.*'{weight}'", "FuseDreamKandinsky22Decoder", decoder=decoder,
            image_embeds=embeds, negative_embeds=embeds, steps=1, width=64, height=64)


# ---------------------------------------------------------------- cancel and memory
class Cancelled(Exception):
    pass


def _cancel_at(n):
    seen = []

    def on_step(step):
        seen.append(step.step)
        if len(seen) >= n:
            raise Cancelled()

    return on_step, seen


def test_the_gaussian_init_checks_cancel_after_every_chunk_of_candidates(pool):
    on_step, seen = _cancel_at(2)
    with pytest.raises(Cancelled):
        best_gaussian_samples(pool["FUSEDREAM_OBJECTIVE"], pool["CLIPAG_IMAGE_GAUSSIAN"], 10_000, 32, 1, 0, chunk=8,
                              on_step=on_step)
    assert seen == [8, 16]


def test_the_gaussian_fit_checks_cancel_after_every_class():
    on_step, seen = _cancel_at(1)
    with pytest.raises(Cancelled):
        SmallImageGaussians.fit([torch.rand(3, 3, 8, 8)] * 5, 4, on_step=on_step)
    assert seen == [1]


def test_the_poisson_solve_checks_cancel_every_iteration():
    mask = torch.zeros(1, 24, 24)
    mask[:, 4:20, 4:12] = 1
    mask[:, 4:10, 4:20] = 1  # an L shape: CG needs many iterations
    on_step, seen = _cancel_at(3)
    with pytest.raises(Cancelled):
        poisson_blend(torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24), mask, tolerance=1e-9, on_step=on_step)
    assert seen == [1, 2, 3]


def _interrupt_inside(monkeypatch, function_name):
    """ComfyUI's Cancel, pressed at the first check made from inside ``function_name``."""
    def throw_if_interrupted():
        if any(frame.function == function_name for frame in inspect.stack()):
            raise Cancelled()

    monkeypatch.setattr(comfy, "throw_if_interrupted", throw_if_interrupted)


def test_cancel_reaches_the_synthesis_nodes_gaussian_init_and_the_poisson_node(pool, monkeypatch):
    _interrupt_inside(monkeypatch, "best_gaussian_samples")
    with pytest.raises(Cancelled):
        call("FuseDreamCLIPAGSynthesis", **_synthesis(pool, init="gaussian", candidates=100_000,
                                                      init_gaussian=pool["CLIPAG_IMAGE_GAUSSIAN"]))
    _interrupt_inside(monkeypatch, "poisson_blend")
    mask = torch.zeros(1, 32, 32)
    mask[:, 4:20, 4:12] = 1
    with pytest.raises(Cancelled):
        call("FuseDreamPoissonBlend", foreground=torch.rand(1, 32, 32, 3), background=torch.rand(1, 32, 32, 3),
             mask=mask)


def test_the_gaussian_fit_refuses_a_model_above_its_memory_budget_before_any_work():
    groups = [torch.rand(2, 3, 8, 8)] * 3
    with pytest.raises(FuseDreamError, match=r"3 classes at 32 px need 0.1 GiB .*limit 0.0 GiB.*16 px needs 7 MiB"):
        SmallImageGaussians.fit(groups, 32, max_bytes=2**20)


def test_the_streamed_gaussian_fit_equals_the_textbook_estimate():
    group = torch.rand(7, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    model = SmallImageGaussians.fit([group, group.flip(0)], 4, ridge=1e-3)
    x = group.flatten(1).double() * 2 - 1
    expected = torch.linalg.cholesky(torch.cov(x.t()) + 1e-3 * torch.eye(48, dtype=torch.float64)).float()
    assert torch.allclose(model.means[0], x.mean(0).float(), atol=1e-6)
    assert torch.allclose(model.cholesky[0], expected, atol=1e-5)
    assert torch.allclose(model.cholesky[1], expected, atol=1e-5)


# ---------------------------------------------------------------- the layer itself
def test_every_node_function_goes_through_the_shared_input_check():
    for node_id, cls in NODE_CLASS_MAPPINGS.items():
        function = getattr(cls, cls.FUNCTION)
        assert hasattr(function, "__wrapped__"), node_id
        assert function.__code__.co_filename.endswith("node_inputs.py"), node_id
