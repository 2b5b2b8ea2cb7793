"""Template-card thumbnails: real outputs of the pack's ops on the trained toy-world models.

ComfyUI's Templates dialog shows ``example_workflows/<name>.jpg`` on the card of ``example_workflows/<name>.json``.
Each thumbnail here is the 32-px output of the method its template runs, on the toy-world fixtures
(``tests/fixtures/toyworld``, see docs/toyworld.md), upscaled with nearest neighbour so the pixels stay visible, with
its caption underneath:

- FuseDream – single image: top-k of 256 toy-BigGAN latents, then AugCLIP basis optimisation;
- FuseDream – composition: two FuseDream bases, then the composition optimiser (dynamic barrier, LPIPS on a random
  AlexNet trunk: the toy world has no LPIPS weights) and Poisson blending, one cell;
- Toy world – composition: the template's own settings on the composition world (``toyworld/composition``): two
  top-k inits of 256 latents, the 18-cell grid with LPIPS on the world-trained AlexNet, Poisson blending;
- CLIPAG – generator-free: pixel synthesis guided by the CLIPAG-fine-tuned (robust) toy CLIP;
- Mix – FuseDream upscaled / Mix – CLIPAG init for SD 1.5 img2img: the FuseDream / CLIPAG output before ComfyUI's
  own nodes take over (upscaling, SD 1.5 img2img: no toy SD model exists);
- Mix – rank loaded images: the 4 best of 64 toy-BigGAN images ranked by the Rank Images op, with their scores;
  Mix – SD 1.5 batch ranked by AugCLIP: a card saying that the picture needs the real SD 1.5 weights;
- OVI / TextEmb – Kandinsky 2.2: with toy Kandinsky 2.2 folders (a prior/encoders folder holding
  ``image_encoder`` and a decoder folder holding ``unet``, under ``<fixtures>/kandinsky22`` or ``--kandinsky``) the
  OVI prior (or the text embedding) and the decoder; without them the card says that no toy Kandinsky model exists
  and shows no picture (nothing that the pack did not make).

    python -m fusedream_ops.toyworld.thumbnails example_workflows            # all of them, ~60 s on one CPU core
    python -m fusedream_ops.toyworld.thumbnails example_workflows --only "CLIPAG – generator-free"
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from ..fusedream.augment import AugmentPolicy
from ..fusedream.latents import sample_latents
from ..fusedream.objective import AugClipObjective
from ..fusedream.optimize import optimize_basis
from ..fusedream.topk import topk_latents
from ..toyworld import world
from .measure import FIXTURES, load_toyworld

CARD = 384
"""Thumbnail side in pixels (the card shows it about 256 px wide)."""
PIXELS = 9
"""Nearest-neighbour upscale of a 32-px output: 288 px, leaving room for a caption readable on the card."""
TEMPLATES = ("FuseDream – single image", "FuseDream – composition", "CLIPAG – generator-free",
             "OVI – Kandinsky 2.2", "TextEmb – Kandinsky 2.2", "Toy world – OVI", "Toy world – composition",
             "Mix – FuseDream upscaled", "Mix – CLIPAG init for SD 1.5 img2img",
             "Mix – SD 1.5 batch ranked by AugCLIP", "Mix – rank loaded images")
CAPTIONS = {
    "FuseDream – single image": "a red circle on the left",
    "FuseDream – composition": "a blue square at the top and a yellow cross at the bottom",
    "CLIPAG – generator-free": "a yellow square on the right",
    "OVI – Kandinsky 2.2": "a red circle on the left",
    "TextEmb – Kandinsky 2.2": "a red circle on the left",
    "Toy world – OVI": "a red circle on the left",
    "Toy world – composition": "a red circle on the left and a blue square on the right",
    "Mix – FuseDream upscaled": "a red circle on the left",
    "Mix – CLIPAG init for SD 1.5 img2img": "a yellow square on the right",
    "Mix – SD 1.5 batch ranked by AugCLIP": "a photo of a blue dog",
    "Mix – rank loaded images": "a red circle on the left",
}


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + ([line] if line else [])


def card(image: torch.Tensor | None, caption: str, note: str):
    """A CARD×CARD picture: ``image`` ([1,3,H,W] in 0..1, upscaled ×PIXELS with nearest) on top, or, when None,
    ``note`` in its place; the caption in quotes and ``note`` underneath."""
    from PIL import Image, ImageDraw

    out = Image.new("RGB", (CARD, CARD), (24, 24, 24))
    draw = ImageDraw.Draw(out)
    font = _font(22)
    if image is not None:
        pixels = (image[0].clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
        side = min(pixels.shape[0], pixels.shape[1]) * PIXELS
        picture = Image.fromarray(pixels).resize((pixels.shape[1] * PIXELS, pixels.shape[0] * PIXELS), Image.NEAREST)
        out.paste(picture, ((CARD - picture.width) // 2, 0))
        top = side + 4
    else:
        y = 60
        for line in _wrap(draw, note, font, CARD - 40):
            draw.text((20, y), line, fill=(230, 230, 230), font=font)
            y += 28
        top = CARD - 64
    y = top
    for line in _wrap(draw, f"“{caption}”", font, CARD - 16)[:2]:
        draw.text((8, y), line, fill=(240, 240, 240), font=font)
        y += 26
    if image is not None:
        draw.text((CARD - 8, CARD - 4), note, fill=(160, 160, 160), font=_font(15), anchor="rb")
    return out


def fusedream_image(tw, caption: str, seed: int = 0, steps: int = 60) -> torch.Tensor:
    """Top-k of 256 latents, then AugCLIP over the basis (paper mode): FuseDream's Alg. 1 at toy size."""
    objective = AugClipObjective(tw.scorer, [(caption, 1.0)], AugmentPolicy(), copies=16)
    candidates = sample_latents(tw.generator, 256, seed)
    basis, _ = topk_latents(tw.generator, candidates, objective, 5, chunk=64, seed=seed)
    return optimize_basis(tw.generator, basis, objective, steps=steps, lr=0.05, seed=seed).image


def composition_image(tw, caption: str, seed: int = 0, steps: int = 40) -> torch.Tensor:
    """FuseDream-Composition for one cell: foreground and background bases from top-k, then eq. 5 and blending."""
    from ..composition.bilevel import Cell, optimize_composition
    from ..models.lpips import load_lpips

    background_text, foreground_text = caption.split(" and ")
    foreground_text = foreground_text.replace(" at the bottom", "")
    objective = AugClipObjective(tw.scorer, [(caption, 1.0)], AugmentPolicy(), copies=16)
    bases = []
    for i, text in enumerate((foreground_text, background_text)):
        scorer = AugClipObjective(tw.scorer, [(text, 1.0)], AugmentPolicy(), copies=16)
        candidates = sample_latents(tw.generator, 256, seed + i)
        bases.append(topk_latents(tw.generator, candidates, scorer, 5, chunk=64, seed=seed + i)[0])
    result = optimize_composition(tw.generator, bases[0], bases[1], objective, load_lpips("alex", random_backbone=True),
                                  [Cell(0.65, "bottom-center")], steps=steps, lr=0.05, seed=seed, copies=16,
                                  blend_iterations=300)
    return result.blended[result.best:result.best + 1]


def composition_world_image(caption: str) -> torch.Tensor:
    """The toy-world composition template's result through the ops, with its values: candidate seeds 0 and 1, top-5
    of 256 by plain CLIP (top-k seed 0), the 18-cell grid in one batch, 40 steps at lr 0.05, grid seed 1, 16 views,
    ``keep`` last, 500 blend iterations, every model in fp32."""
    from ..composition.bilevel import composition_grid_search, paper_grid
    from .composition_world import load_composition_world

    cw = load_composition_world()
    objective = AugClipObjective(cw.scorer, [(caption, 1.0)], AugmentPolicy(), copies=16)
    bases = [topk_latents(cw.generator, sample_latents(cw.generator, 256, s), objective, 5, chunk=64, seed=0)[0]
             for s in (0, 1)]
    result = composition_grid_search(cw.generator, bases[0], bases[1], objective, cw.perceptual, paper_grid(),
                                     cells_per_batch=18, steps=40, lr=0.05, seed=1, copies=16, score_draws=4,
                                     blend_iterations=500, keep="last")
    return result.blended[result.best:result.best + 1]


def clipag_image(tw, caption: str, seed: int = 0, steps: int = 150) -> torch.Tensor:
    """CLIPAG's generator-free synthesis guided by the robust toy CLIP, from the best per-class Gaussian sample."""
    from ..clipag.init_images import SmallImageGaussians, best_gaussian_samples
    from ..clipag.synthesis import PixelSynthesisSettings, synthesize_pixels

    reference = world.sample_scenes(16 * 64, 77)
    klass = reference.labels.max(-1).values - 1
    gaussians = SmallImageGaussians.fit([reference.images[klass == c] for c in range(world.NUM_CLASSES)])
    guide = tw.robust_scorer or tw.scorer
    objective = AugClipObjective(guide, [(caption, 1.0)], AugmentPolicy(signed_range=False))
    init = best_gaussian_samples(objective, gaussians, 64, world.IMAGE_SIZE, 1, seed)
    return synthesize_pixels(objective, init, PixelSynthesisSettings(steps=steps, views=16, patches=8, seed=seed)).image


def ranking_card(tw, caption: str, seed: int = 0, count: int = 64):
    """The 4 best of ``count`` toy-BigGAN images ranked by AugCLIP (:mod:`~fusedream_ops.fusedream.ranking`), 2×2, each
    labelled with its rank and score, the caption underneath."""
    from PIL import Image, ImageDraw

    from ..fusedream.ranking import rank_images

    objective = AugClipObjective(tw.scorer, [(caption, 1.0)], AugmentPolicy(), copies=16)
    images = tw.generator.decode(sample_latents(tw.generator, count, seed)).detach().clamp(0, 1)
    ranking = rank_images(objective, images, draws=4, seed=seed)
    out = Image.new("RGB", (CARD, CARD), (24, 24, 24))
    draw = ImageDraw.Draw(out)
    tile = 4 * images.shape[-1]
    for place, index in enumerate(ranking.top(4).tolist()):
        pixels = (images[index].permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
        left, top = 40 + (place % 2) * (tile + 48), 4 + (place // 2) * (tile + 6)
        out.paste(Image.fromarray(pixels).resize((tile, tile), Image.NEAREST), (left, top))
        draw.text((left - 4, top + 2), f"#{place + 1}", fill=(240, 240, 240), font=_font(15), anchor="ra")
        draw.text((left + tile + 2, top + tile), f"{float(ranking.scores[index]):.2f}", fill=(200, 200, 200),
                  font=_font(13), anchor="ld")
    y = 2 * tile + 16
    for line in _wrap(draw, f"“{caption}”", _font(22), CARD - 16)[:2]:
        draw.text((8, y), line, fill=(240, 240, 240), font=_font(22))
        y += 26
    draw.text((CARD - 8, CARD - 4), f"best 4 of {count} toy images", fill=(160, 160, 160), font=_font(15), anchor="rb")
    return out


def kandinsky_folders(root: str) -> tuple[str, str] | None:
    """(encoders/prior folder, decoder folder) under ``root``: the first sub-folders holding ``image_encoder`` and
    ``unet``; None when either is missing."""
    if not os.path.isdir(root):
        return None
    subs = sorted(os.path.join(root, d) for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    prior = next((d for d in subs if os.path.isdir(os.path.join(d, "image_encoder"))), None)
    decoder = next((d for d in subs if os.path.isdir(os.path.join(d, "unet"))), None)
    return (prior, decoder) if prior and decoder else None


def kandinsky_image(folders: tuple[str, str], caption: str, method: str, seed: int = 0, steps: int = 8,
                    ovi_steps: int = 100) -> torch.Tensor:
    """OVI (pseudo-token optimisation towards the text embedding) or the plain text embedding, then the decoder."""
    from ..models.kandinsky import load_decoder, load_encoders
    from ..ovi.baselines import text_as_image_embeds
    from ..ovi.decode import decode_image_embeds
    from ..ovi.optimize import optimize_ovi

    encoders = load_encoders(folders[0])
    text = encoders.encode_text([caption])
    if method == "ovi":
        embeds = optimize_ovi(encoders.image_encoder, text.text_embeds[0], steps=ovi_steps, seed=seed).image_embeds
    else:
        embeds = text_as_image_embeds(text)
    decoder = load_decoder(folders[1])
    return decode_image_embeds(decoder, embeds, encoders.zero_image_embed(), steps=steps, width=64, height=64,
                               seed=seed)


ILLUSTRATION = "illustration from another prompt"
"""The note of a method template's card: the picture is these nodes on toy-world models from another caption than
the template's prompt
(the real models are not in the repository), and the card says so."""


def make(name: str, tw, kandinsky: tuple[str, str] | None):
    caption = CAPTIONS[name]
    own = name.startswith("Toy world")  # the toy-world templates' cards show their own prompt's output
    note = "toy-world output, 32 px" if own else ILLUSTRATION
    if name == "FuseDream – single image":
        return card(fusedream_image(tw, caption), caption, note)
    if name == "FuseDream – composition":
        return card(composition_image(tw, caption), caption, note)
    if name == "Toy world – composition":
        return card(composition_world_image(caption), caption, note)
    if name == "CLIPAG – generator-free":
        return card(clipag_image(tw, caption), caption, note)
    if name == "Mix – FuseDream upscaled":
        return card(fusedream_image(tw, caption), caption, f"{ILLUSTRATION}: FuseDream before upscaling")
    if name == "Mix – CLIPAG init for SD 1.5 img2img":
        return card(clipag_image(tw, caption), caption, f"{ILLUSTRATION}: the CLIPAG init (SD 1.5 not run)")
    if name == "Mix – rank loaded images":
        return ranking_card(tw, caption)
    if name == "Mix – SD 1.5 batch ranked by AugCLIP":
        return card(None, caption, "A Stable Diffusion 1.5 batch ranked by AugCLIP. No toy-world SD model: the "
                                   "picture needs the real SD 1.5 weights.")
    method = "ovi" if "OVI" in name else "textemb"
    if kandinsky is not None:
        image = kandinsky_image(kandinsky, caption, method)
        if image.shape[-1] > 32:  # the card's picture area holds 32 px at ×PIXELS
            image = torch.nn.functional.interpolate(image, size=(32, 32), mode="area")
        return card(image, caption, "toy Kandinsky 2.2 output" if own else ILLUSTRATION)
    what = "OVI prior" if method == "ovi" else "text embedding as image embedding"
    return card(None, caption, f"Kandinsky 2.2 ({what} + decoder). No toy-world Kandinsky model yet: the picture "
                               "needs the real Kandinsky 2.2 weights.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder of the templates (example_workflows)")
    parser.add_argument("--models", default=FIXTURES, help="toy-world models (default: tests/fixtures/toyworld)")
    parser.add_argument("--kandinsky", default=None,
                        help="folder holding toy Kandinsky 2.2 encoders/prior and decoder folders "
                             "(default: <models>/kandinsky22 when it exists)")
    parser.add_argument("--only", action="append", default=[], choices=TEMPLATES)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tw = load_toyworld(args.models)
    kandinsky = kandinsky_folders(args.kandinsky or os.path.join(args.models, "kandinsky22"))
    for name in args.only or TEMPLATES:
        start = time.monotonic()
        path = os.path.join(args.out, f"{name}.jpg")
        make(name, tw, kandinsky).save(path, quality=90)
        print(f"{path}  ({time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
