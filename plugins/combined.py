"""Combined inputs: one item that holds a text and an image together (``{"text": ..., "image": ...}``),
which a model that reads them jointly (a vision-language embedder through sentence-transformers)
embeds as one row: a caption with its picture, a question with a page.

The keys are sentence-transformers' and OpenAI's names for the parts (``text``, ``image``); each
part decodes as its own modality's inputs do (a text is a string; an image a path, bytes, a PIL
image or an array). A model with no ``combined`` tower refuses such items by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zoo.hookspecs import RegisterModality, hookimpl
from zoo.plugins.examples import images, texts
from zoo.plugins.text import decode_text
from zoo.plugins.vision import decode_image

#: the modality's name (a model's tower of combined items; zoo serve's object inputs)
COMBINED = "combined"
#: the parts a combined item holds, each decoded as that modality's inputs are
PARTS = {"text": decode_text, "image": decode_image}


def decode_combined(item: Any) -> dict[str, Any]:
    """A ``{"text": ..., "image": ...}`` item with each part decoded, in the item's own order (the
    order the model reads them in); both parts are required."""
    if not isinstance(item, Mapping):
        raise TypeError(f"a combined input is a mapping of its parts ({', '.join(PARTS)}), not "
                        f"{type(item).__name__}")
    if set(item) != set(PARTS):
        raise ValueError(f"a combined input holds exactly the parts {', '.join(PARTS)}; this one has "
                         f"{', '.join(map(str, item)) or 'none'}")
    decoded = {}
    for part in item:
        try:
            decoded[part] = PARTS[part](item[part])
        except (TypeError, ValueError, OSError) as exc:
            raise type(exc)(f"its {part}: {exc}") from None
    return decoded


def examples() -> list[dict[str, Any]]:
    """Eight captions with the example images."""
    return [{"text": text, "image": image} for text, image in zip(texts(), images())]


@hookimpl
def zoo_register_modalities(register: RegisterModality) -> None:
    register(COMBINED, decode=decode_combined,
             description="a text and an image in one item: {'text': ..., 'image': ...}, one row for both",
             examples=examples)
