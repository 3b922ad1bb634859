"""The vision modality: images from files, bytes, PIL images, HxWxC arrays or CxHxW tensors,
embedded by timm and torchvision models."""

from __future__ import annotations

import io
import os
from typing import Any

from zoo.hookspecs import RegisterAdapter, RegisterModality, hookimpl


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
        if arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"float pixels must lie in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}]")
        arr = (arr * 255).round().astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def decode_image(item: Any) -> Any:
    """Any supported image input -> an RGB ``PIL.Image`` (fully decoded, so corrupt files fail here)."""
    from PIL import Image

    if isinstance(item, (str, os.PathLike)):
        with Image.open(item) as img:
            img.load()  # a truncated file fails here, not later in a worker
            return img.convert("RGB")
    if isinstance(item, (bytes, bytearray)):
        with Image.open(io.BytesIO(item)) as img:
            img.load()
            return img.convert("RGB")
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if hasattr(item, "detach") and hasattr(item, "numpy"):  # a torch tensor, CxHxW
        return _array_to_image(item.detach().cpu().numpy(), "CHW")
    if hasattr(item, "__array_interface__") or type(item).__module__ == "numpy":
        return _array_to_image(item, "HWC")
    raise TypeError(f"expected an image path, bytes, PIL image, HxWxC array or CxHxW tensor, got {type(item).__name__}")


@hookimpl
def zoo_register_modalities(register: RegisterModality) -> None:
    register("vision", decode=decode_image,
             description="images: paths, bytes, PIL images, HxWxC uint8 arrays, CxHxW tensors",
             examples="zoo.plugins.examples:images")


@hookimpl
def zoo_register_adapters(register: RegisterAdapter) -> None:
    register("timm", "zoo.adapters.timm:TimmAdapter", schemes=("timm",))
    register("torchvision", "zoo.adapters.torchvision:TorchvisionAdapter", schemes=("torchvision",))
