"""Read weight files safely: safetensors first; a pickle only with ``torch.load(weights_only=True)``,
which refuses to run code embedded in the file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError

if TYPE_CHECKING:
    import torch

    from zoo.catalog._spec import ModelSpec

    from ._sources import ModelFiles


def load_state_dict(path: str | os.PathLike[str], *, key: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors by name from a ``.safetensors`` file or a pickle checkpoint.

    Args:
        path: the weight file.
        key: for a pickle holding a dict of things (``{"model_state": ...}``), the entry to return.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    import pickle

    import torch

    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ZooError(
            f"refusing to load {path}: it needs arbitrary code to unpickle ({exc}); "
            "convert it to safetensors with the library that wrote it"
        ) from None
    if key is not None:
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ZooError(f"{path} does not hold a state dict of tensors" + (f" under {key!r}" if key else ""))
    return obj


_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def weights_file(spec: ModelSpec, files: ModelFiles) -> Path:
    """The checkpoint inside ``files``: ``config.weights`` if the spec names one, else a standard name."""
    named = spec.config.get("weights")
    candidates = [named] if named else list(_WEIGHT_FILES)
    for name in candidates:
        if (files.root / name).is_file():
            return files.root / name
    if not named:  # a folder holding exactly one checkpoint, whatever its name
        found = [p for p in files.root.iterdir() if p.suffix in (".safetensors", ".pth", ".pt", ".bin")]
        if len(found) == 1:
            return found[0]
    raise ZooError(f"no weights file ({', '.join(candidates)}) in {files.root} for model {spec.name!r}")
