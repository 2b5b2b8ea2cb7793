"""Rebuild the second half of the toy-world fixtures (the Kandinsky-format models for OVI), deterministically:

    python -m fusedream_ops.toyworld.build_ovi tests/fixtures/toyworld     # the committed fixtures
    python -m fusedream_ops.toyworld.build_ovi /tmp/toy --smoke            # a few steps of each (CI)

Needs the first half's tiny CLIP (``python -m fusedream_ops.toyworld.build``) in the same folder; never touches
the first half's files. Writes ``kandinsky22/toyworld-prior/`` (transformers encoders + tokenizer),
``kandinsky22/toyworld-decoder/`` (diffusers ``unet/``, ``movq/``, ``scheduler/``),
``ovi_reference/toyworld.safetensors`` (the pack's reference statistics of real world scenes) and
``toyworld/build_ovi_report.json``. One CPU thread, fixed seeds, float16 weights; a part whose files exist is kept.
"""
from __future__ import annotations

import os
import sys
import time

from ..core.errors import require
from ..toyworld import kandinsky_world as kw
from .build import CLIP_PATH
from .fixture_build import build_command, run_build

FULL_STEPS = {"movq": 300, "decoder_unet": 1000}
SMOKE_STEPS = {"movq": 2, "decoder_unet": 2}
REPORT_PATH = os.path.join("toyworld", "build_ovi_report.json")


def build_ovi_models(out_dir: str, steps: dict, log=print) -> dict:
    from ..models.clip import load_clip
    from ..models.kandinsky import load_encoders
    from .train_clip import CLIP_CONFIG

    seconds = {}
    clip_path = os.path.join(out_dir, CLIP_PATH)
    require(os.path.isfile(clip_path), f"'{clip_path}' is missing: build the first half of the toy world first "
                                       f"(python -m fusedream_ops.toyworld.build {out_dir}).")
    prior = os.path.join(out_dir, kw.PRIOR_DIR)
    if not os.path.isfile(os.path.join(prior, "text_encoder", "model.safetensors")):
        start = time.time()
        kw.write_prior_folder(load_clip("auto", clip_path).model.float(), CLIP_CONFIG, prior)
        seconds["prior_encoders"] = round(time.time() - start, 1)
    encoders = load_encoders(prior)
    decoder = os.path.join(out_dir, kw.DECODER_DIR)
    if not os.path.isfile(os.path.join(decoder, "unet", "diffusion_pytorch_model.safetensors")):
        start = time.time()
        movq = kw.train_movq(steps["movq"], log=log)
        seconds["movq"] = round(time.time() - start, 1)
        start = time.time()
        unet = kw.train_unet(encoders.image_encoder, steps["decoder_unet"], log=log)
        seconds["decoder_unet"] = round(time.time() - start, 1)
        kw.write_decoder_folder(movq, unet, decoder)
    stats = os.path.join(out_dir, kw.REFERENCE_PATH)
    if not os.path.isfile(stats):
        kw.write_reference_stats(encoders, stats)
    return seconds


def build(out_dir: str, smoke: bool = False, log=print) -> dict:
    steps = SMOKE_STEPS if smoke else FULL_STEPS
    return run_build(out_dir, REPORT_PATH, smoke, steps, lambda: build_ovi_models(out_dir, steps, log),
                     lambda: evaluate(out_dir, count=8 if smoke else 64))


def evaluate(out_dir: str, count: int = 64) -> dict:
    """Sanity numbers on what was written: the judge's reading of decoded real-scene embeddings."""
    from .claims_ovi import decoder_sanity

    return decoder_sanity(out_dir, count)


def main(argv=None) -> int:
    return build_command(argv, "fusedream_ops.toyworld.build_ovi", __doc__, build,
                         "the toy-world models tree (holding the first half's open_clip/ CLIP)")


if __name__ == "__main__":
    sys.exit(main())
