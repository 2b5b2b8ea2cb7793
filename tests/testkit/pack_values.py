"""One real value of every custom type the nodes pass around, made from the fixture command's tiny models through
the pack's own loaders and nodes (under ``torch.inference_mode()``, as ComfyUI runs them)."""
import functools
import types

import torch

from fusedream_pack.fusedream_ops.clipag.init_images import SmallImageGaussians
from fusedream_pack.fusedream_ops.fixtures import biggan_clip, kandinsky
from fusedream_pack.fusedream_ops.ovi.reference_stats import build_reference_stats
from testkit.workflows import run_node


def _first(node_id, **inputs):
    with torch.inference_mode():
        return run_node(node_id, **inputs)["result"][0]


@functools.lru_cache(maxsize=None)
def values(models_root: str) -> dict:
    """``{custom type: value}``; ``models_root`` is the tiny models tree (the session's fallback model root)."""
    generator = _first("FuseDreamBigGANLoader", checkpoint=biggan_clip.BIGGAN_NAME)
    clip = _first("FuseDreamCLIPLoader", architecture="auto", checkpoint=biggan_clip.CLIP_NAME)
    encoders = _first("FuseDreamKandinsky22EncodersLoader", prior_folder=kandinsky.PRIOR_NAME)
    text = _first("FuseDreamKandinsky22TextEncode", encoders=encoders, prompt="a red car", negative_prompt="")
    embeds = _first("FuseDreamKandinsky22TextEmbPrior", text=text)
    rng = torch.Generator().manual_seed(0)
    return {
        "BIGGAN": generator,
        "FUSEDREAM_CLIP": clip,
        "FUSEDREAM_OBJECTIVE": _first("FuseDreamAugCLIPObjective", clip=clip, prompt="a dog", copies=2),
        "BIGGAN_LATENT": _first("FuseDreamLatentSampler", generator=generator, candidates=4),
        "FUSEDREAM_LPIPS": _first("FuseDreamLPIPSLoader", net="alex"),
        "CLIPAG_IMAGE_GAUSSIAN": SmallImageGaussians.fit([torch.rand(3, 3, 8, 8, generator=rng)] * 2, 4),
        "KANDINSKY22_ENCODERS": encoders,
        "KANDINSKY22_DECODER": _first("FuseDreamKandinsky22DecoderLoader", decoder_folder=kandinsky.DECODER_NAME),
        "KANDINSKY22_TEXT_EMBEDS": text,
        "KANDINSKY22_IMAGE_EMBEDS": embeds,
        "OVI_REFERENCE_STATS": build_reference_stats(torch.randn(6, embeds.shape[1], generator=rng), 0.5),
        "CLIP_VISION_OUTPUT": types.SimpleNamespace(image_embeds=embeds.clone()),
    }
