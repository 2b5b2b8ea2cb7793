"""The template thumbnails' command: picture layout, Kandinsky folder detection and the Kandinsky path (run here on
the tiny random Kandinsky folders, which stand in for the toy-world ones until those exist)."""
import os

import torch

from fusedream_pack.fusedream_ops.toyworld import thumbnails
from testkit.kandinsky_models import decoder_folder, models_dir, prior_folder


def test_a_card_shows_the_output_upscaled_with_nearest_and_its_caption_below():
    image = torch.zeros(1, 3, 32, 32)
    image[0, 0, 3, 5] = 1.0  # one red pixel
    card = thumbnails.card(image, "a red circle on the left", "toy-world output, 32 px")
    assert card.size == (thumbnails.CARD, thumbnails.CARD)
    left = (thumbnails.CARD - 32 * thumbnails.PIXELS) // 2
    block = [card.getpixel((left + 5 * thumbnails.PIXELS + dx, 3 * thumbnails.PIXELS + dy))
             for dx in (1, thumbnails.PIXELS - 2) for dy in (1, thumbnails.PIXELS - 2)]
    assert all(p[0] > 200 and p[1] < 60 for p in block), "the pixel is a sharp 9x9 block"
    caption_band = card.crop((0, 32 * thumbnails.PIXELS + 2, thumbnails.CARD, thumbnails.CARD))
    assert caption_band.convert("L").getextrema()[1] > 200, "the caption is drawn under the picture"


def test_kandinsky_folders_are_found_only_when_both_prior_and_decoder_exist(tmp_path):
    assert thumbnails.kandinsky_folders(str(tmp_path / "missing")) is None
    (tmp_path / "prior" / "image_encoder").mkdir(parents=True)
    assert thumbnails.kandinsky_folders(str(tmp_path)) is None
    (tmp_path / "decoder" / "unet").mkdir(parents=True)
    assert thumbnails.kandinsky_folders(str(tmp_path)) == (str(tmp_path / "prior"), str(tmp_path / "decoder"))


def test_the_kandinsky_path_runs_ovi_and_textemb_through_the_pack_loaders():
    torch.set_num_threads(1)
    folders = thumbnails.kandinsky_folders(os.path.join(models_dir(), "kandinsky22"))
    assert folders == (prior_folder(), decoder_folder())
    for method in ("ovi", "textemb"):
        image = thumbnails.kandinsky_image(folders, "a red circle on the left", method, steps=2, ovi_steps=3)
        assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()
