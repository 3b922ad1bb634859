"""The image-text modality: CLIP-style models that embed images and texts into one space.

``featurize`` takes images (decoded as in the vision modality); ``featurize_texts`` takes strings.
"""

from __future__ import annotations

from pathlib import Path

from zoo.adapters.open_clip import OpenClipAdapter
from zoo.catalog._spec import ModelSpec
from zoo.hookspecs import RegisterAdapter, RegisterModality, hookimpl
from zoo.plugins.vision import IMAGE_SUFFIXES


@hookimpl
def zoo_register_modalities(register: RegisterModality) -> None:
    register("image-text", decode="zoo.plugins.vision:decode_image",
             description="images and texts in one space: featurize(images), featurize_texts(texts)",
             examples="zoo.plugins.examples:images", suffixes=IMAGE_SUFFIXES)


@hookimpl
def zoo_register_adapters(register: RegisterAdapter) -> None:
    register("open_clip", "zoo.adapters.open_clip:OpenClipAdapter", schemes=("open_clip",))


@hookimpl
def zoo_spec_from_path(path: Path) -> ModelSpec | None:
    """A folder in open_clip's hub format (``open_clip_config.json``)."""
    if path.is_dir() and (path / "open_clip_config.json").is_file():
        return OpenClipAdapter.spec_for_path(path)
    return None
