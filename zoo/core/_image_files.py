"""The image files zoo reads, opened one way everywhere: only the raster formats it lists, and
nothing over PIL's pixel limit (PIL itself only warns up to twice the limit, which would let one
small file take gigabytes)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image as PILImage

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# The PIL formats of those files (a camera's multi-picture JPEG opens as JPEG). PIL would otherwise
# try every plugin it has, EPS included, which runs Ghostscript on whatever bytes it is given.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")


@contextlib.contextmanager
def opened_image(source: str | Any | IO[bytes], formats: tuple[str, ...] = IMAGE_FORMATS
                 ) -> Iterator[PILImage.Image]:
    """``PIL.Image.open`` restricted to ``formats`` (some of :data:`IMAGE_FORMATS`); an image over
    the pixel limit is a ``ValueError`` saying what to do, before its pixels are decoded."""
    import warnings

    from PIL import Image

    Image.init()  # registers every plugin, so each listed format is known (open() preloads five)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source, formats=[f for f in formats if f in IMAGE_FORMATS])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # not OSErrors: say what to do
        raise ValueError(f"{exc} If the file is trusted, raise PIL.Image.MAX_IMAGE_PIXELS") from None
    with image:
        yield image
