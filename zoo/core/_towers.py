"""Which tower of a model a column of inputs goes through."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.catalog._registry import get_registry
from zoo.errors import ZooError

if TYPE_CHECKING:
    from ._model import Model


def column_tower(model: Model, name: str, column: Sequence[Any]) -> str:
    """The tower a column of inputs goes through: the primary one for a model of one tower; for
    an image-text model, the text tower for a column of texts, the image tower for a column of
    images (files of an image suffix, bytes, arrays); a tower a modality adds over another (video)
    for a column of its files. A column of both is refused."""
    registry = get_registry()
    added = {kind for kind in model.towers if registry.modality(kind).over in model.towers}  # a model's own: not added
    for kind in added:  # a column of clips: the video tower
        suffixes = registry.modality(kind).suffixes
        if column and all(isinstance(x, str) and Path(x).suffix.lower() in suffixes for x in column):
            return kind
    towers = {kind: tower for kind, tower in model.towers.items() if kind not in added}
    primary = next(iter(towers))
    if len(towers) == 1:
        return primary
    media = registry.modality(primary).suffixes
    missing = next((x for x in column if isinstance(x, str) and Path(x).suffix.lower() in media
                    and not os.path.isfile(x)), None)
    if missing is not None:  # a path that names no file would otherwise train as a caption
        raise ZooError(f"the {name} column names {missing!r}, which is no file (paths are read from the "
                       f"current folder, {os.getcwd()}): fix the path, or pass the image itself")
    kinds = {"text" if isinstance(x, str) and Path(x).suffix.lower() not in media else primary for x in column}
    if len(kinds) > 1 or not kinds <= set(towers):
        raise ZooError(f"the {name} column mixes texts and {primary} inputs; {model.name} takes one kind per "
                       "column (image-caption pairs: images in one column, their captions in the other)")
    return kinds.pop()
