"""The precision policy: reduced-precision weights follow fp32's gradient, latents and Adam stay fp32, auto's choice.

Margins measured on the tiny fixture models (2026-11-28/29): gradient cosine to fp32 is ≥ 0.9993 with CLIP in
bf16 (generator fp32, auto on a bf16 CPU), ≥ 0.9999 with both in fp16 (8 prompt/seed pairs); with the generator in
bf16 it is 0.9984–0.9999 on the 3 pairs tested here but 0.984–0.9999 over 8 pairs, whether the batch norms compute
in fp32 (the pack: gain and shift folded in fp32) or not (the library) and under ``torch.autocast`` alike: bf16's
convolutions bound it, so a bf16 generator is pinned at 0.997 and auto never picks bf16 for the generator outside
ComfyUI. AugCLIP differs by ≤ 0.0021 (bf16 CLIP) and ≤ 0.0003 (fp16) on scores around 0.08; LPIPS by ≤ 0.4 % (bf16)
and ≤ 0.05 % (fp16) of its value (3 seeds; tested at 1 %).
"""
import os
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.core.precision import DTYPES, cpu_has_fast_bf16, resolve_dtype
from fusedream_pack.fusedream_ops.fusedream.basis import LatentBasis
from fusedream_pack.fusedream_ops.fusedream.latents import sample_latents
from fusedream_pack.fusedream_ops.fusedream.objective import AugClipObjective
from fusedream_pack.fusedream_ops.models.biggan import load_biggan
from fusedream_pack.fusedream_ops.models.clip import load_clip
from fusedream_pack.fusedream_ops.models.lpips import BACKBONE_FILES, load_lpips
from fusedream_pack.nodes import comfy

CASES = [  # generator, CLIP, least gradient cosine, largest score difference (≈ 1.5–3× the measured worst)
    ("fp32", "bf16", 0.999, 4e-3),
    ("fp16", "bf16", 0.999, 4e-3),
    ("fp16", "fp16", 0.999, 1e-3),
    ("bf16", "bf16", 0.997, 4e-3),
]


def _models(root, generator_precision, clip_precision):
    generator = load_biggan(os.path.join(root, "biggan", "biggan-deep-256"), generator_precision)
    scorer = load_clip("auto", os.path.join(root, "open_clip", "ViT-B-32.safetensors"), clip_precision)
    return generator, scorer


def _score_and_gradient(generator, scorer, prompt, seed):
    latents = sample_latents(generator, 2, seed)
    objective = AugClipObjective(scorer, [(prompt, 1.0)], copies=8)
    z, y = latents.z.clone().requires_grad_(), latents.y.clone().requires_grad_()
    score = objective.score(generator(z, y), torch.Generator().manual_seed(seed))
    score.sum().backward()
    return score.detach(), torch.cat([z.grad.flatten(), y.grad.flatten()]), z.grad.dtype


@pytest.fixture(scope="module")
def fp32_models(tiny_models):
    return _models(tiny_models, "fp32", "fp32")


@pytest.mark.parametrize("generator_precision, clip_precision, least_cosine, score_tolerance", CASES)
def test_reduced_precision_follows_the_fp32_gradient_and_score(tiny_models, fp32_models, generator_precision,
                                                                clip_precision, least_cosine, score_tolerance):
    reduced = _models(tiny_models, generator_precision, clip_precision)
    assert reduced[0].dtype == DTYPES[generator_precision] and reduced[1].dtype == DTYPES[clip_precision]
    for prompt, seed in (("a photo of a dog", 0), ("a red car", 1), ("a bowl of soup", 2)):
        want_score, want_grad, _ = _score_and_gradient(*fp32_models, prompt, seed)
        score, grad, grad_dtype = _score_and_gradient(*reduced, prompt, seed)
        assert grad_dtype == torch.float32
        assert F.cosine_similarity(grad, want_grad, dim=0) >= least_cosine, (prompt, seed)
        assert (score - want_score).abs().max() <= score_tolerance, (prompt, seed)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_lpips_in_reduced_precision_returns_fp32_distances_close_to_fp32(tiny_models, precision):
    backbone = os.path.join(tiny_models, "lpips", BACKBONE_FILES["alex"][0])
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    want = load_lpips("alex", backbone)(images[:2], images[2:])
    got = load_lpips("alex", backbone, precision=precision)(images[:2], images[2:])
    assert got.dtype == torch.float32
    assert torch.allclose(got, want, rtol=1e-2), (got, want)


def test_latents_gradients_and_adam_state_stay_fp32_with_bf16_models(tiny_models):
    generator, scorer = _models(tiny_models, "bf16", "bf16")
    objective = AugClipObjective(scorer, [("a photo of a dog", 1.0)], copies=4)
    basis = LatentBasis(sample_latents(generator, 3, 0))
    optimizer = torch.optim.Adam(basis.parameters(), lr=1e-2)
    for _ in range(2):
        z, y = basis()
        image = generator(z, y)
        assert image.dtype == torch.float32
        optimizer.zero_grad()
        (-objective.score(image, torch.Generator().manual_seed(0)).sum()).backward()
        optimizer.step()
    for p in basis.parameters():
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32
        assert all(v.dtype == torch.float32 for v in optimizer.state[p].values() if v.is_floating_point())


def test_an_unknown_precision_is_refused_by_name(tiny_models):
    with pytest.raises(FuseDreamError, match="precision must be one of auto, fp32, fp16, bf16, got 'fp8'"):
        load_clip("auto", os.path.join(tiny_models, "open_clip", "ViT-B-32.safetensors"), "fp8")


def test_auto_uses_the_hosts_choice_when_it_can_compute_with_it():
    assert resolve_dtype("fp16", "cpu", "vae") == torch.float16
    assert resolve_dtype("auto", "cuda", "vae", torch.bfloat16) == torch.bfloat16
    assert resolve_dtype("auto", "cpu", "text_encoder", torch.float32) == torch.float32
    clip_default = torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    assert resolve_dtype("auto", "cpu", "text_encoder") == clip_default
    assert resolve_dtype("auto", "cpu", "vae") == torch.float32, "bf16 convolutions are slower on a CPU"
    assert resolve_dtype("auto", "cpu", "text_encoder", torch.float16) == clip_default, "no fp16 compute on a CPU"
    assert resolve_dtype("auto", "cpu", "text_encoder", torch.float8_e4m3fn) == clip_default


@pytest.fixture
def model_management(monkeypatch):
    """A stand-in of comfy.model_management: its device and the two dtype choices the pack asks it for
    (``text_encoder_dtype`` / ``vae_dtype``, whose flag handling is ComfyUI's own business)."""
    module = types.ModuleType("comfy.model_management")
    module.device = torch.device("cpu")
    module.choices = {"text_encoder": torch.float16, "vae": torch.float32}  # ComfyUI 0.3.64 on a CPU
    module.asked = []
    module.get_torch_device = lambda: module.device
    module.text_encoder_dtype = lambda device=None: module.choices["text_encoder"]

    def vae_dtype(device=None, allowed_dtypes=()):
        module.asked.append(tuple(allowed_dtypes))
        return module.choices["vae"]

    module.vae_dtype = vae_dtype
    monkeypatch.setitem(sys.modules, "comfy.model_management", module)
    return module


def test_inside_comfyui_encoders_follow_text_encoder_dtype_and_generators_vae_dtype(model_management):
    """Checked: with ``should_use_bf16`` asked instead (the old rule) the fp16 text-encoder choice is lost."""
    model_management.device = torch.device("cuda")  # only its type is read: no GPU is touched
    model_management.choices = {"text_encoder": torch.float16, "vae": torch.bfloat16}
    assert comfy.weight_dtype("auto", "text_encoder") == torch.float16, "--force-fp16 / fp16 text encoders"
    assert comfy.weight_dtype("auto", "kandinsky_encoder") == torch.float16
    assert comfy.weight_dtype("auto", "vae") == torch.bfloat16
    assert model_management.asked[-1] == (torch.float16, torch.bfloat16), "fp16 first for convolution networks"
    assert comfy.weight_dtype("fp32", "text_encoder") == torch.float32, "an explicit choice wins"


def test_a_comfyui_choice_the_cpu_cannot_compute_falls_back_to_the_device_default(model_management):
    clip_default = torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    assert comfy.weight_dtype("auto", "text_encoder") == clip_default, "ComfyUI says fp16 on a CPU"
    assert comfy.weight_dtype("auto", "kandinsky_encoder") == torch.float32, "OVI is validated in fp32 only"
    assert comfy.weight_dtype("auto", "vae") == torch.float32


def test_a_resolved_dtype_crosses_the_seam_unchanged_and_a_bad_one_is_refused():
    assert resolve_dtype(torch.bfloat16, "cpu", "vae") == torch.bfloat16
    with pytest.raises(FuseDreamError, match="precision must be one of"):
        resolve_dtype(torch.float8_e4m3fn, "cpu", "vae")


def test_topk_scores_the_generator_in_its_own_role_not_the_text_encoders(tiny_models, tiny_generator, tiny_scorer,
                                                                          model_management, monkeypatch):
    """ComfyUI picks bf16 for the text encoder and fp32 for the generator: the node's top-k must score with exactly
    those copies. Checked: resolving both copies with the text encoder's role makes the scores differ."""
    from fusedream_pack.fusedream_ops.fusedream.latents import sample_latents
    from fusedream_pack.fusedream_ops.fusedream.objective import AugClipObjective
    from fusedream_pack.fusedream_ops.fusedream.topk import topk_latents
    from fusedream_pack.nodes.fusedream import TopKInit

    model_management.choices = {"text_encoder": torch.bfloat16, "vae": torch.float32}
    monkeypatch.setattr(comfy, "load_to_device", lambda *modules: torch.device("cpu"))  # no ModelPatcher here
    model_management.throw_exception_if_processing_interrupted = lambda: None
    objective = AugClipObjective(tiny_scorer, [("a red car", 1.0)], copies=2)
    candidates = sample_latents(tiny_generator, 6, seed=2)
    result = TopKInit().select(tiny_generator, candidates, objective, 2, False, 3, 0, "auto")["result"]
    want = topk_latents(tiny_generator, candidates, objective, 2, 3, generator_dtype=torch.float32,
                        scorer_dtype=torch.bfloat16)[1]
    every_bf16 = topk_latents(tiny_generator, candidates, objective, 2, 3, generator_dtype=torch.bfloat16,
                              scorer_dtype=torch.bfloat16)[1]
    assert result[1] == ", ".join(f"{s:.4f}" for s in want.tolist())
    assert not torch.equal(want, every_bf16), "the test could not tell the roles apart"


def test_loader_nodes_follow_comfyui_inside_it(tiny_models, model_management):
    from fusedream_pack.nodes.fusedream import CLIPLoader

    model_management.choices["text_encoder"] = torch.float32
    scorer = CLIPLoader().load("auto", "ViT-B-32.safetensors", "auto")[0]
    assert scorer.dtype == torch.float32, "ComfyUI says fp32 (--fp32-text-enc)"
    model_management.choices["text_encoder"] = torch.bfloat16
    assert CLIPLoader().load("auto", "ViT-B-32.safetensors", "auto")[0].dtype == torch.bfloat16
    assert CLIPLoader().load("auto", "ViT-B-32.safetensors", "fp32")[0].dtype == torch.float32


MODEL_LOADERS = ("FuseDreamBigGANLoader", "FuseDreamCLIPLoader", "FuseDreamLPIPSLoader",
                 "FuseDreamKandinsky22EncodersLoader", "FuseDreamKandinsky22EncodersFromFiles",
                 "FuseDreamKandinsky22DecoderLoader")


@pytest.mark.parametrize("node_id", MODEL_LOADERS)
def test_every_model_loader_node_offers_precision_defaulting_to_auto(node_id):
    from fusedream_pack.nodes import NODE_CLASS_MAPPINGS

    choices, options = NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()["required"]["precision"]
    assert choices == ["auto", "fp32", "fp16", "bf16"] and options["default"] == "auto" and options["tooltip"]
