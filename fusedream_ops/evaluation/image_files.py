"""The one place the evaluation opens an image file: refused before decoding when it is no image or too large.

``Image.open`` reads only the header, so the declared ``width × height`` is checked against :data:`MAX_PIXELS`
before any pixel is decoded: a few kB of PNG that declares 12000 × 12000 pixels (a decompression bomb) would
otherwise take ~430 MB to decode, and more as float tensors. Anything that is not a decodable image (a text file,
a truncated PNG) is a [FuseDream] error naming the file instead of a traceback. The pack's shared bounded image
reader may replace this function.
"""
from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
from PIL import Image

from ..core.errors import FuseDreamError

MAX_PIXELS = 4096 * 4096
"""Largest image the evaluation decodes (16.8 MP); COCO images are at most 640 × 640, generated ones 1024²."""


def read_rgb(source: str | bytes, name: str, size: int | None = None, decode: bool = True) -> np.ndarray | None:
    """The image at path ``source`` (or encoded bytes) as RGB uint8 ``[H, W, 3]``, PIL-bicubic resized to ``size``²
    when given and different; ``decode=False`` only checks the header. ``name`` says which file in errors."""
    try:
        with warnings.catch_warnings():  # PIL's own bomb warning (> 89 MP): the bound below is stricter
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        with img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise FuseDreamError(f"{name} declares {width} × {height} pixels, more than the evaluation "
                                     f"reads ({MAX_PIXELS:,} = 4096²); refused before decoding. Resize it, or "
                                     f"remove it if it is not one of your images.")
            if not decode:
                return None
            img = img.convert("RGB")
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.BICUBIC)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error,
            Image.DecompressionBombError) as exc:
        if isinstance(exc, FuseDreamError):
            raise
        raise FuseDreamError(f"{name} is not a readable image ({type(exc).__name__}: {str(exc)[:200]}); "
                             f"replace or remove it.") from None
