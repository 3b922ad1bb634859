"""zoo: one loader for pretrained text, vision, audio and image-text models.

>>> import zoo
>>> model = zoo.load("minilm-l6")
>>> X = model.featurize(["a sentence", "another one"])   # (2, 384) float32

Importing zoo is cheap: no torch and no backend library is imported until a model loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public names, imported on first attribute access so `import zoo` stays light.
_LAZY = {
    "load": "zoo.loader",
    "resolve": "zoo.loader",
    "list_models": "zoo.loader",
    "info": "zoo.loader",
    "pull": "zoo.loader",
    "verify": "zoo.loader",
    "Adapter": "zoo.adapter",
    "ModelSpec": "zoo.spec",
    "Source": "zoo.spec",
    "ModelFiles": "zoo.model_files",
    "FinetuneConfig": "zoo.finetune_config",
    "hookimpl": "zoo.hookspecs",
    "ZooError": "zoo.errors",
    "UnknownModelError": "zoo.errors",
    "RegistryError": "zoo.errors",
    "DuplicateModelError": "zoo.errors",
    "IntegrityError": "zoo.errors",
    "InputError": "zoo.errors",
    "OfflineError": "zoo.errors",
    "SourceError": "zoo.errors",
    "PluginError": "zoo.errors",
    "UnsafePathError": "zoo.errors",
    "UnsupportedOptionError": "zoo.errors",
    "ProvenanceMismatchError": "zoo.errors",
    "EmbedOptions": "zoo.embed_options",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from .adapter import Adapter
    from .errors import (
        DuplicateModelError,
        InputError,
        IntegrityError,
        OfflineError,
        PluginError,
        ProvenanceMismatchError,
        RegistryError,
        SourceError,
        UnknownModelError,
        UnsafePathError,
        UnsupportedOptionError,
        ZooError,
    )
    from .embed_options import EmbedOptions
    from .hookspecs import hookimpl
    from .loader import info, list_models, load, pull, resolve, verify
    from .finetune_config import FinetuneConfig
    from .model_files import ModelFiles
    from .spec import ModelSpec, Source


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
