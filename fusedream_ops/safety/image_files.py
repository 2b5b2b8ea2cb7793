"""Image files read with a bound on their pixels: a 17 KB PNG may declare 12000×12000 pixels (3 GB as floats).

The size a file declares is read from its header before any pixel is decoded. A JPEG is decoded at 1/2, 1/4 or 1/8
scale (``draft``) when the use needs fewer pixels, and any image is then shrunk by a whole factor (``reduce``, a box
filter) down to what the use needs, before it becomes a float tensor. An image that still declares more than
``max_pixels`` is refused with an error naming the file and the bound; PIL's own decompression-bomb refusal and
files that are no decodable image (text, truncated or corrupt data) become the same kind of error.
:func:`check_image` makes the same checks from the header alone, so a folder of images can be checked before any
of them is decoded.
"""
from __future__ import annotations

import io
import struct
import warnings
import zlib

from PIL import Image

from ..core.errors import FuseDreamError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
"""The image files a folder input is read for (every reader of image folders lists these)."""
MAX_IMAGE_PIXELS = 50_000_000
"""Largest image decoded (a 50-megapixel photo, 8160×6120): about 150 MB as 8-bit RGB, 600 MB as a float tensor."""

UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
"""What PIL raises on bytes that are no image, or whose header or pixel data is cut or corrupt (seen by fuzzing)."""


def _limit(max_pixels: int) -> str:
    return f"images are read up to {max_pixels:,} pixels ({max_pixels / 1e6:.1f} megapixels)"


def _unreadable(label: str, exc: BaseException) -> FuseDreamError:
    return FuseDreamError(f"{label} is not a readable image ({type(exc).__name__}: {str(exc)[:200]}); replace it or "
                          f"remove it.")


def _open_bounded(source: str | bytes, label: str, shrink_to: int | None, max_pixels: int) -> Image.Image:
    """The opened (not yet decoded) image, drafted for ``shrink_to``, whose declared size is at most ``max_pixels``."""
    try:
        with warnings.catch_warnings():  # PIL warns between 89 and 179 megapixels; the bound below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Image.DecompressionBombError as exc:
        raise FuseDreamError(f"{label} declares too many pixels ({exc}); {_limit(max_pixels)}: shrink it "
                             f"first.") from None
    except UNREADABLE as exc:
        raise _unreadable(label, exc) from None
    try:
        if shrink_to is not None:
            img.draft("RGB", (shrink_to, shrink_to))  # JPEG: decode at a fraction of the size; others: no-op
        width, height = img.size
    except UNREADABLE as exc:
        img.close()
        raise _unreadable(label, exc) from None
    if width * height > max_pixels:
        img.close()
        raise FuseDreamError(f"{label} declares {width}×{height} pixels ({width * height / 1e6:.1f} megapixels); "
                             f"{_limit(max_pixels)}, so it is refused before decoding: shrink it first.")
    return img


def _label(source: str | bytes, what: str, name: str | None) -> str:
    if name is None and isinstance(source, bytes):
        raise TypeError("an image given as bytes needs its name for errors")
    return f"{what} '{source if name is None else name}'"


def check_image(source: str | bytes, what: str = "image", *, name: str | None = None,
                max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Refuses ``source`` (a path, or encoded bytes) from its header alone: no image, or more than ``max_pixels``.

    Errors name it as ``{what} '{name}'`` (``name`` defaults to the path)."""
    _open_bounded(source, _label(source, what, name), None, max_pixels).close()


def read_image(source: str | bytes, what: str = "image", *, name: str | None = None, shrink_to: int | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """The RGB image in ``source`` (a path, or encoded bytes), decoded only if it declares at most ``max_pixels``
    pixels (after ``draft``). Errors name it as ``{what} '{name}'`` (``name`` defaults to the path).

    ``shrink_to``: the use needs a shorter side of only this many pixels, so the image is decoded and kept at a
    shorter side between ``shrink_to`` and twice that (or its own size when smaller).
    """
    label = _label(source, what, name)
    with _open_bounded(source, label, shrink_to, max_pixels) as img:
        try:
            rgb = img.convert("RGB")
        except UNREADABLE as exc:  # truncated or corrupt pixel data
            raise _unreadable(label, exc) from None
    if shrink_to is not None and min(rgb.size) >= 2 * shrink_to:
        rgb = rgb.reduce(min(rgb.size) // shrink_to)
    return rgb
