"""The text modality: Unicode strings, embedded by transformers encoders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.hookspecs import RegisterAdapter, RegisterModality, hookimpl
from zoo.spec import ModelSpec


def decode_text(item: Any) -> str:
    """A text input must be a ``str``; anything else is an error naming its type."""
    if not isinstance(item, str):
        raise TypeError(f"expected str, got {type(item).__name__}")
    return item


@hookimpl
def zoo_register_modalities(register: RegisterModality) -> None:
    register("text", decode=decode_text, description="Unicode strings", examples="zoo.plugins.examples:texts")


@hookimpl
def zoo_register_adapters(register: RegisterAdapter) -> None:
    register("transformers", "zoo.adapters.transformers:TransformersAdapter", schemes=("hf",))


@hookimpl
def zoo_spec_from_path(path: Path) -> ModelSpec | None:
    """A Hugging Face model folder (it has ``config.json``)."""
    if path.is_dir() and (path / "config.json").is_file():
        from zoo.adapters.transformers import TransformersAdapter

        return TransformersAdapter.spec_for_path(path)
    return None
