"""The exact fast layers: CLIP's patch embedding as a matmul and BigGAN's 3-channel output convolution."""
import os

import torch
from torch import nn

from fusedream_pack.fusedream_ops.biggan import load_biggan
from fusedream_pack.fusedream_ops.clip_scorer import load_clip
from fusedream_pack.fusedream_ops.fast_layers import LeadingChannelsConv2d, PatchEmbedding

TOPK_SCORE_TOLERANCE = 5e-3
"""bf16 scoring on the tiny models moves scores (spread 0.02–0.14 over 60 candidates) by up to 0.0028 (4 prompts;
the kept set matched fp32 in 19 of 20 places, the 20th a near-tie 0.0007 below the 5th best): a candidate it keeps
instead of an fp32 top-k one is a near-tie within this margin."""


def test_patch_matmul_equals_the_strided_convolution_and_its_input_gradient():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 48, kernel_size=8, stride=8, bias=False)
    fast = PatchEmbedding(conv)
    x = torch.rand(3, 3, 36, 40, requires_grad=True)  # 36 and 40 are not multiples of 8: the rest is dropped
    want = conv(x)
    (want * torch.linspace(-1, 1, want.numel()).view_as(want)).sum().backward()
    want_grad, x.grad = x.grad, None
    got = fast(x)
    (got * torch.linspace(-1, 1, got.numel()).view_as(got)).sum().backward()
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(x.grad, want_grad, atol=1e-6)


def test_leading_channels_conv_equals_the_full_convolution_cut_to_three_channels():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, kernel_size=3, padding=1)
    x = torch.rand(2, 16, 12, 12)
    assert torch.equal(LeadingChannelsConv2d(conv, 3)(x), conv(x)[:, :3])


def test_loaded_models_use_the_fast_layers_and_keep_their_state_dict_keys(tiny_models):
    scorer = load_clip("auto", os.path.join(tiny_models, "open_clip", "ViT-B-32.safetensors"))
    generator = load_biggan(os.path.join(tiny_models, "biggan", "biggan-deep-256"))
    assert isinstance(scorer.model.visual.conv1, PatchEmbedding)
    assert isinstance(generator.model.generator.conv_to_rgb, LeadingChannelsConv2d)
    assert "visual.conv1.weight" in scorer.model.state_dict()
    assert {"generator.conv_to_rgb.weight", "generator.conv_to_rgb.bias"} <= set(generator.model.state_dict())
    assert generator.model.state_dict()["generator.conv_to_rgb.weight"].shape[0] == generator.config.channel_width


def test_topk_scoring_in_bf16_keeps_the_fp32_best_up_to_near_ties_and_leaves_the_models_alone(tiny_models):
    from fusedream_pack.fusedream_ops.latents import sample_latents
    from fusedream_pack.fusedream_ops.objective import AugClipObjective
    from fusedream_pack.fusedream_ops.topk import topk_latents

    generator = load_biggan(os.path.join(tiny_models, "biggan", "biggan-deep-256"))
    scorer = load_clip("auto", os.path.join(tiny_models, "open_clip", "ViT-B-32.safetensors"))
    for prompt, seed in (("a photo of a dog", 0), ("a red car", 1)):
        objective = AugClipObjective(scorer, [(prompt, 1.0)], copies=4)
        candidates = sample_latents(generator, 60, seed)
        with torch.no_grad():
            every = objective.cosine(generator.decode(candidates))
        got, got_scores = topk_latents(generator, candidates, objective, k=5, chunk=0, precision="bf16")
        picked = (got.z[:, None] == candidates.z[None]).all(-1).float().argmax(dim=1)
        assert torch.equal(candidates.z[picked], got.z)
        assert (every[picked] >= every.topk(5).values[-1] - TOPK_SCORE_TOLERANCE).all(), prompt
        assert (got_scores - every[picked]).abs().max() <= TOPK_SCORE_TOLERANCE, prompt
    assert generator.dtype == torch.float32 and scorer.dtype == torch.float32


def test_the_chunk_from_free_memory_is_bounded(tiny_models):
    from fusedream_pack.fusedream_ops.topk import MAX_CHUNK, chunk_for_memory

    generator = load_biggan(os.path.join(tiny_models, "biggan", "biggan-deep-256"))
    assert chunk_for_memory(generator, 0) == 1
    assert chunk_for_memory(generator, 1 << 40) == MAX_CHUNK
    per_candidate = 8 * 32 * 32 * generator.config.channel_width * 4
    assert chunk_for_memory(generator, 20 * per_candidate) == 10
