"""The exact fast layers: CLIP's patch embedding as a matmul, its fused QuickGELU and self-attention, BigGAN's fused
batch norm + ReLU and 3-channel output convolution."""
import os

import pytest
import torch
from torch import nn

from fusedream_pack.fusedream_ops.models.biggan import load_biggan
from fusedream_pack.fusedream_ops.models.clip import load_clip
from fusedream_pack.fusedream_ops.models.fast_layers import LeadingChannelsConv2d, PatchEmbedding

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
    from fusedream_pack.fusedream_ops.fusedream.latents import sample_latents
    from fusedream_pack.fusedream_ops.fusedream.objective import AugClipObjective
    from fusedream_pack.fusedream_ops.fusedream.topk import topk_latents

    generator = load_biggan(os.path.join(tiny_models, "biggan", "biggan-deep-256"))
    scorer = load_clip("auto", os.path.join(tiny_models, "open_clip", "ViT-B-32.safetensors"))
    for prompt, seed in (("a photo of a dog", 0), ("a red car", 1)):
        objective = AugClipObjective(scorer, [(prompt, 1.0)], copies=4)
        candidates = sample_latents(generator, 60, seed)
        with torch.no_grad():
            every = objective.cosine(generator.decode(candidates))
        got, got_scores = topk_latents(generator, candidates, objective, k=5, chunk=0,
                                       generator_dtype=torch.bfloat16, scorer_dtype=torch.bfloat16)
        picked = (got.z[:, None] == candidates.z[None]).all(-1).float().argmax(dim=1)
        assert torch.equal(candidates.z[picked], got.z)
        assert (every[picked] >= every.topk(5).values[-1] - TOPK_SCORE_TOLERANCE).all(), prompt
        assert (got_scores - every[picked]).abs().max() <= TOPK_SCORE_TOLERANCE, prompt
    assert generator.dtype == torch.float32 and scorer.dtype == torch.float32


def test_the_chunk_from_free_memory_is_bounded(tiny_models):
    from fusedream_pack.fusedream_ops.fusedream.topk import MAX_CHUNK, chunk_for_memory

    generator = load_biggan(os.path.join(tiny_models, "biggan", "biggan-deep-256"))
    assert chunk_for_memory(generator, 0) == 1
    assert chunk_for_memory(generator, 1 << 40) == MAX_CHUNK
    per_candidate = 8 * 32 * 32 * generator.config.channel_width * 4
    assert chunk_for_memory(generator, 20 * per_candidate) == 10


def _library_batch_norm(conditional: bool, seed: int = 0):
    from pytorch_pretrained_biggan.model import BigGANBatchNorm

    torch.manual_seed(seed)
    bn = BigGANBatchNorm(6, condition_vector_dim=5, n_stats=11, eps=1e-4, conditional=conditional)
    with torch.no_grad():
        bn.running_means.normal_()
        bn.running_vars.uniform_(0.5, 2.0)
        if conditional:
            nn.utils.remove_spectral_norm(bn.scale)
            nn.utils.remove_spectral_norm(bn.offset)
            bn.scale.weight.mul_(0.3)
        else:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
    return bn


@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("truncation", [0.4, 0.43])  # on a stored statistic, and between two
def test_fused_batch_norm_relu_equals_the_library_batch_norm_then_relu_with_gradients(conditional, truncation):
    from fusedream_pack.fusedream_ops.models.fast_layers import BatchNormReLU

    bn = _library_batch_norm(conditional)
    fast = BatchNormReLU(bn)
    x = torch.randn(3, 6, 5, 4, requires_grad=True)
    y = torch.randn(3, 5, requires_grad=True)
    weights = torch.linspace(-1, 1, x.numel()).view_as(x)
    want = torch.relu(bn(x, truncation, y))
    (want * weights).sum().backward()
    want_grads = [t.grad for t in (x, y)]
    x.grad = y.grad = None
    got = fast(x, truncation, y)
    (got * weights).sum().backward()
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(x.grad, want_grads[0], atol=1e-5)
    if conditional:
        assert torch.allclose(y.grad, want_grads[1], atol=1e-5)


def test_fused_batch_norm_keeps_fp32_weights_through_a_cast_and_returns_its_inputs_dtype():
    from fusedream_pack.fusedream_ops.models.fast_layers import BatchNormReLU

    bn = _library_batch_norm(True)
    fast = BatchNormReLU(bn).to(torch.bfloat16)
    assert all(t.dtype == torch.float32 for t in [*fast.parameters(), *fast.buffers()])
    x, y = torch.randn(2, 6, 3, 3), torch.randn(2, 5)
    got = fast(x.to(torch.bfloat16), 0.4, y)
    assert got.dtype == torch.bfloat16
    assert torch.allclose(got.float(), torch.relu(bn(x, 0.4, y)), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_generator_keeps_batch_norm_weights_fp32_and_convolutions_in_the_weights_dtype(tiny_models, precision):
    from fusedream_pack.fusedream_ops.core.precision import DTYPES
    from fusedream_pack.fusedream_ops.fusedream.latents import sample_latents
    from fusedream_pack.fusedream_ops.models.fast_layers import BatchNormReLU

    generator = load_biggan(os.path.join(tiny_models, "biggan", "biggan-deep-256"), precision)
    batch_norms = [m for m in generator.modules() if isinstance(m, BatchNormReLU)]
    assert len(batch_norms) == 4 * len(generator.config.layers) + 1
    assert all(p.dtype == torch.float32 for bn in batch_norms for p in [*bn.parameters(), *bn.buffers()])
    convolutions = [m for m in generator.modules() if isinstance(m, nn.Conv2d)]
    assert convolutions and all(m.weight.dtype == DTYPES[precision] for m in convolutions)
    assert not any(isinstance(m, nn.ReLU) for m in generator.modules()), "the ReLUs are fused into the batch norms"
    latents = sample_latents(generator, 2, 0)
    assert generator.decode(latents).dtype == torch.float32


def _outputs_and_input_gradients(forwards, make_input):
    """Each forward's output on a fresh ``make_input()``, and the gradient with respect to that input of the output
    weighted by a ramp from -1 to 1 (every element counts, with its own weight)."""
    outs, grads = [], []
    for forward in forwards:
        x = make_input().requires_grad_()
        out = forward(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out)
        grads.append(x.grad)
    return outs, grads


def test_pack_generator_equals_the_library_generator_with_latent_gradients(tiny_models):
    from pytorch_pretrained_biggan import BigGAN

    from fusedream_pack.fusedream_ops.core.checkpoints import read_state_dict
    from fusedream_pack.fusedream_ops.fusedream.latents import sample_latents
    from fusedream_pack.fusedream_ops.models.biggan import fold_spectral_norm

    folder = os.path.join(tiny_models, "biggan", "biggan-deep-256")
    generator = load_biggan(folder)
    library = BigGAN(generator.model.config)  # the library's own modules with the same weights
    library.load_state_dict(read_state_dict(os.path.join(folder, "model.safetensors")))
    fold_spectral_norm(library)
    library.eval()
    assert {k: v.shape for k, v in generator.model.state_dict().items()} == \
        {k: v.shape for k, v in library.state_dict().items()}, "the swapped layers keep the state dict"
    latents = sample_latents(generator, 3, 0, truncation=0.7)
    outs, grads = _outputs_and_input_gradients(
        (lambda c: generator.model.generator(c, 0.7), lambda c: library.generator(c, 0.7)),
        lambda: torch.cat([latents.z, latents.y], dim=1))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_fused_quickgelu_equals_x_sigmoid_and_its_gradient():
    from fusedream_pack.fusedream_ops.models.fast_layers import QuickGELU

    x = (torch.randn(4, 7, 33, dtype=torch.float64) * 4).requires_grad_()
    weights = torch.linspace(-1, 1, x.numel(), dtype=torch.float64).view_as(x)
    want = x * torch.sigmoid(1.702 * x)
    (want * weights).sum().backward()
    want_grad, x.grad = x.grad, None
    got = QuickGELU()(x)
    (got * weights).sum().backward()
    assert torch.allclose(got, want, atol=1e-12)
    assert torch.allclose(x.grad, want_grad, atol=1e-12)


def _quickgelu_clip():
    import open_clip

    from fusedream_pack.fusedream_ops.fixtures.biggan_clip import TINY_CLIP_CONFIG

    torch.manual_seed(0)
    return open_clip.CLIP(**TINY_CLIP_CONFIG, quick_gelu=True).eval()


def test_clip_with_fused_quickgelu_and_attention_equals_open_clip_with_input_gradients():
    import copy

    import open_clip

    from fusedream_pack.fusedream_ops.models.clip import OPENAI_MEAN, OPENAI_STD, ClipScorer
    from fusedream_pack.fusedream_ops.models.fast_layers import BatchFirstSelfAttention, QuickGELU

    model = _quickgelu_clip()
    reference = copy.deepcopy(model).requires_grad_(False)
    scorer = ClipScorer(model, open_clip.get_tokenizer("ViT-B-32"), "tiny", OPENAI_MEAN, OPENAI_STD)
    blocks = scorer.model.visual.transformer.resblocks
    assert all(isinstance(b.attn, BatchFirstSelfAttention) and isinstance(b.mlp.gelu, QuickGELU) for b in blocks)
    assert set(scorer.model.state_dict()) == set(reference.state_dict())
    images = torch.rand(3, 3, 32, 32)
    outs, grads = _outputs_and_input_gradients((scorer.model.encode_image, reference.encode_image),
                                               lambda: scorer.prepare(images))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-4)
    with torch.no_grad():
        text = open_clip.get_tokenizer("ViT-B-32")(["a dog"])
        assert torch.allclose(scorer.model.encode_text(text), reference.encode_text(text), atol=1e-5)


def test_batch_first_attention_runs_the_original_for_masks_and_weights():
    from fusedream_pack.fusedream_ops.models.fast_layers import BatchFirstSelfAttention

    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 2, batch_first=True)
    x = torch.randn(2, 5, 16)
    mask = torch.triu(torch.full((5, 5), float("-inf")), diagonal=1)
    want = attn(x, x, x, attn_mask=mask, need_weights=True)
    attn.__class__ = BatchFirstSelfAttention
    got = attn(x, x, x, attn_mask=mask, need_weights=True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
