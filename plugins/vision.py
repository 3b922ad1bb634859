"""The vision modality: images from files, bytes, PIL images, HxWxC arrays or CxHxW tensors,
embedded by timm and torchvision models."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from zoo.adapters.hf_folders import read_folder
from zoo.adapters.timm import TimmAdapter
from zoo.catalog._spec import ModelSpec
from zoo.core._image_files import IMAGE_FORMATS, IMAGE_SUFFIXES, opened_image
from zoo.core._media import declared_format
from zoo.hookspecs import RegisterAdapter, RegisterModality, hookimpl

# What PIL decodes that cameras, scanners and datasets produce.


def _array_to_image(array: Any, layout: str) -> Any:
    import numpy as np
    from PIL import Image

    arr = np.asarray(array)
    if layout == "CHW" and arr.ndim == 3:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        want = "CxHxW tensor" if layout == "CHW" else "HxW or HxWxC array"
        raise ValueError(f"expected a {want} with 1, 3 or 4 channels, got shape {tuple(np.shape(array))}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"expected uint8 (0-255) or float (0-1) pixels, got {arr.dtype}")
        if not np.isfinite(arr).all():
            raise ValueError("image array contains NaN or infinite values")
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(f"float pixels must lie in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}]")
        arr = (arr * 255).round().astype(np.uint8)
    return to_rgb(Image.fromarray(arr))


def _scaled_to_8_bits(image: Any) -> Any:
    """A 16-bit, 32-bit integer or float grey image as 8 bits, scaled rather than clipped (PIL's
    own ``convert`` clips, so a 16-bit picture becomes all white)."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(image)
    if image.mode == "F":
        if not np.isfinite(arr).all():
            raise ValueError("float image contains NaN or infinite values")
        scale = 255.0 if arr.size and arr.max() <= 1.0 else 1.0  # [0, 1] floats, else 0-255 values
    else:
        top = int(arr.max()) if arr.size else 0
        scale = 1.0 if top <= 255 else 255.0 / 65535 if top <= 65535 else 255.0 / top
    return Image.fromarray(np.clip(arr.astype(np.float64) * scale, 0, 255).round().astype(np.uint8), "L")


def to_rgb(image: Any) -> Any:
    """Any PIL image as 8-bit RGB: high bit depths scaled, transparency composed onto white (what a
    viewer shows), palettes expanded. An image with no pixels, or more than PIL's decompression-bomb
    limit, is a ``ValueError``."""
    from PIL import Image

    if image.width == 0 or image.height == 0:
        raise ValueError(f"empty image ({image.width}x{image.height} pixels)")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _scaled_to_8_bits(image)
    if (image.mode == "P" and "transparency" in image.info) or image.mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


# A data URL's image type -> PIL's format: image data declared as one must be one.
_FORMAT_OF_MEDIA = {"image/jpeg": "JPEG", "image/jpg": "JPEG", "image/pjpeg": "JPEG", "image/png": "PNG",
                    "image/apng": "PNG", "image/gif": "GIF", "image/webp": "WEBP", "image/bmp": "BMP",
                    "image/x-ms-bmp": "BMP", "image/tiff": "TIFF"}


def _open(source: Any, formats: tuple[str, ...] = IMAGE_FORMATS) -> Any:
    """Open and fully decode an image file (a truncated one fails here, not later in a worker)."""
    with opened_image(source, formats) as img:
        img.load()
        return to_rgb(img)


def decode_image(item: Any) -> Any:
    """Any supported image input -> an RGB ``PIL.Image`` (fully decoded, so corrupt files fail here)."""
    from PIL import Image

    if isinstance(item, (str, os.PathLike)):
        return _open(item)
    if isinstance(item, (bytes, bytearray)):
        declared = declared_format(item, _FORMAT_OF_MEDIA, "an image")
        try:
            return _open(io.BytesIO(item), (declared,) if declared else IMAGE_FORMATS)
        except Image.UnidentifiedImageError:  # PIL's message would show a BytesIO's address
            if declared:
                raise OSError(f"the image data declared as {getattr(item, 'media_type', '')} is not a {declared} "
                              f"file ({len(item)} bytes, starting {bytes(item[:8])!r}); declare its own type") from None
            raise OSError(f"cannot identify the image data ({len(item)} bytes, starting {bytes(item[:8])!r}) as "
                          f"an image zoo reads ({', '.join(IMAGE_FORMATS)})") from None
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if hasattr(item, "detach") and hasattr(item, "numpy"):  # a torch tensor, CxHxW
        return _array_to_image(item.detach().cpu().numpy(), "CHW")
    if hasattr(item, "__array_interface__") or type(item).__module__ == "numpy":
        return _array_to_image(item, "HWC")
    raise TypeError(f"expected an image path, bytes, PIL image, HxWxC array or CxHxW tensor, got {type(item).__name__}")


@hookimpl
def zoo_register_modalities(register: RegisterModality) -> None:
    register("vision", decode=decode_image,
             description="images: paths, bytes, PIL images, HxWxC uint8 arrays, CxHxW tensors",
             examples="zoo.plugins.examples:images", suffixes=IMAGE_SUFFIXES, media_types=("image/*",))


@hookimpl
def zoo_register_adapters(register: RegisterAdapter) -> None:
    register("timm", "zoo.adapters.timm:TimmAdapter", schemes=("timm",))
    register("torchvision", "zoo.adapters.torchvision:TorchvisionAdapter", schemes=("torchvision",))


@hookimpl
def zoo_spec_from_path(path: Path, kind: str | None) -> ModelSpec | None:
    """A folder that timm wrote (``config.json`` naming an ``architecture``): timm loads it."""
    if path.is_dir():
        found = read_folder(path, kind)
        if found is not None and found.format == "timm":
            return TimmAdapter.spec_for_path(path, found)
    return None
