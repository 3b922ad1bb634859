"""zoo: one loader for pretrained text, vision, audio and image-text models.

>>> import zoo
>>> model = zoo.load("minilm-l6")
>>> X = model.featurize(["a sentence", "another one"])   # (2, 384) float32

Importing zoo is cheap: no torch and no backend library is imported until a model loads.

This module is the whole public surface, for users and for plugins alike (``docs/plugins.md``
imports only from it): every other module may move.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _moved

__version__ = "0.1.0"

# Public names, imported on first attribute access so `import zoo` stays light.
_LAZY = {
    "load": "zoo.catalog._loader",
    "resolve": "zoo.catalog._loader",
    "list_models": "zoo.catalog._loader",
    "info": "zoo.catalog._loader",
    "pull": "zoo.catalog._loader",
    "verify": "zoo.catalog._loader",
    "Model": "zoo.core._model",
    "Encoder": "zoo.core._encoder",
    "Built": "zoo.core._encoder",
    "ExportPlan": "zoo.core._encoder",
    "DeviceStage": "zoo.core._encoder",
    "longest_first": "zoo.core._encoder",
    "Adapter": "zoo.adapter",
    "ModelSpec": "zoo.catalog._spec",
    "Source": "zoo.catalog._spec",
    "ModelFiles": "zoo.store._model_files",
    "FinetuneConfig": "zoo.training._config",
    "merge": "zoo.training._merge",
    "mine_negatives": "zoo.training._mining",
    "evaluate": "zoo.evaluation._evaluate",
    "MinedNegatives": "zoo.training._mining",
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
    "UnsupportedModelKindError": "zoo.errors",
    "ModelFormatError": "zoo.errors",
    "ProvenanceMismatchError": "zoo.errors",
    "Ranked": "zoo.core._rerank",
    "EmbedOptions": "zoo.core._embed_options",
    "TokenMatrices": "zoo.core._token_rows",
    # for plugins: the encoder contract, shared encoder bases, checked weight reading, the kit
    "Head": "zoo.core._model",
    "AudioAdapter": "zoo.adapters.audio",
    "ImageBackboneAdapter": "zoo.adapters.image",
    "ImageTextAdapter": "zoo.adapters.image_text",
    "load_state_dict": "zoo.store._checkpoint",
    "weights_file": "zoo.store._checkpoint",
    "assert_conformance": "zoo.testing",
    # for plugins that register a model kind with rows of its own (zoo.hookspecs.zoo_register_kinds)
    "RowFormat": "zoo.core._rows",
    "RowBuffer": "zoo.core._rows",
    "RowStore": "zoo.core._rows",
    "atomic_path": "zoo.store._atomic",
    "load_sentence_transformers": "zoo.adapters.sentence_transformers",
    "InputWarning": "zoo.errors",
}

__all__ = ["__version__", *_LAZY]

_moved.install()

if TYPE_CHECKING:
    from zoo.catalog._loader import info, list_models, load, pull, resolve, verify
    from zoo.catalog._spec import ModelSpec, Source
    from zoo.core._embed_options import EmbedOptions
    from zoo.core._encoder import Built, DeviceStage, Encoder, ExportPlan, longest_first
    from zoo.core._model import Head, Model
    from zoo.core._rerank import Ranked
    from zoo.evaluation._evaluate import evaluate
    from zoo.store._checkpoint import load_state_dict, weights_file
    from zoo.store._model_files import ModelFiles
    from zoo.training._config import FinetuneConfig
    from zoo.training._merge import merge
    from zoo.training._mining import MinedNegatives, mine_negatives

    from .adapter import Adapter
    from .adapters.audio import AudioAdapter
    from .adapters.image import ImageBackboneAdapter
    from .adapters.image_text import ImageTextAdapter
    from .errors import (
        DuplicateModelError,
        InputError,
        InputWarning,
        IntegrityError,
        ModelFormatError,
        OfflineError,
        PluginError,
        ProvenanceMismatchError,
        RegistryError,
        SourceError,
        UnknownModelError,
        UnsafePathError,
        UnsupportedModelKindError,
        UnsupportedOptionError,
        ZooError,
    )
    from .hookspecs import hookimpl
    from .testing import assert_conformance


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
