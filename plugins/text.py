"""The text modality: Unicode strings, embedded by transformers encoders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.adapters.hf_folders import PAGES_FORMAT, read_folder
from zoo.adapters.transformers import TransformersAdapter
from zoo.catalog._spec import ModelSpec
from zoo.hookspecs import RegisterAdapter, RegisterModality, hookimpl


def decode_text(item: Any) -> str:
    """A text input must be a ``str`` of valid Unicode; anything else is an error saying why."""
    if not isinstance(item, str):
        raise TypeError(f"expected str, got {type(item).__name__}")
    if not item.isascii():
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate: tokenizers raise a bare TypeError on it
            raise ValueError(f"the text is not valid Unicode: {exc.reason} at position {exc.start} "
                             f"({item[exc.start]!r}); decode the source with errors='replace'") from None
    return item


@hookimpl
def zoo_register_modalities(register: RegisterModality) -> None:
    register("text", decode=decode_text, description="Unicode strings", examples="zoo.plugins.examples:texts")


@hookimpl
def zoo_register_adapters(register: RegisterAdapter) -> None:
    register("transformers", "zoo.adapters.transformers:TransformersAdapter", schemes=("hf",))


# The folder formats this plugin's backend runs (timm's are the vision plugin's).
_TEXT_FORMATS = ("sentence-transformers", "sentence-transformers-image-text", "sentence-transformers-multimodal",
                 "cross-encoder", "multi-vector", PAGES_FORMAT, "transformers")


@hookimpl
def zoo_spec_from_path(path: Path, kind: str | None) -> ModelSpec | None:
    """A folder that sentence-transformers or transformers wrote (``modules.json``, or
    ``config.json`` with a ``model_type``), an embedder, a reranker or a multi-vector model; a sparse
    one is an error naming its kind (unless its plugin claims it first). timm's folders are the vision plugin's."""
    if path.is_dir():
        found = read_folder(path, kind)
        if found is not None and found.format in _TEXT_FORMATS:
            return TransformersAdapter.spec_for_path(path, kind)
    return None
