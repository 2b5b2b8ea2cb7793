"""Image files read with a bound on their pixels: a 17 KB PNG may declare 12000×12000 pixels (3 GB as floats).

The size a file declares is read from its header before any pixel is decoded. A JPEG is decoded at 1/2, 1/4 or 1/8
scale (``draft``) when the use needs fewer pixels, and any image is then shrunk by a whole factor (``reduce``, a box
filter) down to what the use needs, before it becomes a float tensor. An image that still declares more than
``max_pixels`` is refused with an error naming the file and its size; PIL's own decompression-bomb refusal and
unreadable files become the same kind of error.
"""
from __future__ import annotations

import warnings

from PIL import Image, UnidentifiedImageError

from ..core.errors import FuseDreamError

MAX_IMAGE_PIXELS = 50_000_000
"""Largest image decoded (a 50-megapixel photo, 8160×6120): about 150 MB as 8-bit RGB, 600 MB as a float tensor."""


def read_image(path: str, what: str = "image", *, shrink_to: int | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """The RGB image in file ``path``, decoded only if it declares at most ``max_pixels`` pixels (after ``draft``).

    ``shrink_to``: the use needs a shorter side of only this many pixels, so the image is decoded and kept at a
    shorter side between ``shrink_to`` and twice that (or its own size when smaller).
    """
    try:
        with warnings.catch_warnings():  # PIL warns between 89 and 179 megapixels; the bound below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise FuseDreamError(f"{what} '{path}' declares too many pixels ({exc}); images are read up to "
                             f"{max_pixels / 1e6:g} megapixels: shrink it first.") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise FuseDreamError(f"{what} '{path}' could not be read: {exc}.") from None
    with img:
        if shrink_to is not None:
            img.draft("RGB", (shrink_to, shrink_to))  # JPEG: decode at a fraction of the size; others: no-op
        width, height = img.size
        if width * height > max_pixels:
            raise FuseDreamError(f"{what} '{path}' is {width}×{height} pixels ({width * height / 1e6:.1f} "
                                 f"megapixels); images are read up to {max_pixels / 1e6:g} megapixels: shrink it "
                                 f"first.")
        try:
            rgb = img.convert("RGB")
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt pixel data
            raise FuseDreamError(f"{what} '{path}' could not be read: {exc}.") from None
    if shrink_to is not None and min(rgb.size) >= 2 * shrink_to:
        rgb = rgb.reduce(min(rgb.size) // shrink_to)
    return rgb
