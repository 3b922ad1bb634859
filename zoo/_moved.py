"""Module paths of zoo 0.1's flat layout, still importable: ``import zoo.featurize`` gives
``zoo.core._featurize`` with a :class:`DeprecationWarning` naming where to import from instead.

Plugins written against the old paths (``zoo.adapter.Built``, ``zoo.checkpoint.load_state_dict``,
``zoo.featurize.OnError``) keep loading; new code imports from :mod:`zoo`. The old name is an alias
of the new module, not a copy, so patching either patches both.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

MOVED = {
    "zoo.allocator": "zoo.core._allocator",
    "zoo.atomic": "zoo.store._atomic",
    "zoo.blocks": "zoo.core._blocks",
    "zoo.bundle": "zoo.store._bundle",
    "zoo.cache": "zoo.store._cache",
    "zoo.checkpoint": "zoo.store._checkpoint",
    "zoo.compiled": "zoo.core._compiled",
    "zoo.defaults": "zoo.catalog._defaults",
    "zoo.embed": "zoo.embeddings._embed",
    "zoo.embed_options": "zoo.core._embed_options",
    "zoo.embedding_file": "zoo.embeddings._embedding_file",
    "zoo.embedding_map": "zoo.embeddings._embedding_map",
    "zoo.encoder": "zoo.core._encoder",
    "zoo.featurize": "zoo.core._featurize",
    "zoo.finetune_config": "zoo.training._config",
    "zoo.image_files": "zoo.core._image_files",
    "zoo.inputs": "zoo.embeddings._inputs",
    "zoo.installed": "zoo.store._installed",
    "zoo.integrity": "zoo.store._integrity",
    "zoo.loader": "zoo.catalog._loader",
    "zoo.manifest": "zoo.store._manifest",
    "zoo.model": "zoo.core._model",
    "zoo.model_files": "zoo.store._model_files",
    "zoo.plugin_manager": "zoo.catalog._plugin_manager",
    "zoo.predictions": "zoo.core._predictions",
    "zoo.provenance": "zoo.store._provenance",
    "zoo.quantize": "zoo.core._quantize",
    "zoo.registry": "zoo.catalog._registry",
    "zoo.registry_file": "zoo.catalog._registry_file",
    "zoo.safe_paths": "zoo.store._safe_paths",
    "zoo.scores": "zoo.catalog._scores",
    "zoo.serve.app": "zoo.serve._app",
    "zoo.serve.batcher": "zoo.serve._batcher",
    "zoo.serve.frontdoor": "zoo.serve._frontdoor",
    "zoo.serve.requests": "zoo.serve._requests",
    "zoo.settings": "zoo.store._settings",
    "zoo.sources": "zoo.store._sources",
    "zoo.spec": "zoo.catalog._spec",
    "zoo.tables": "zoo.embeddings._tables",
    "zoo.training.checkpoints": "zoo.training._checkpoints",
    "zoo.training.data": "zoo.training._data",
    "zoo.training.finetuned": "zoo.training._finetuned",
    "zoo.training.heads": "zoo.training._heads",
    "zoo.training.loop": "zoo.training._loop",
    "zoo.training.plot": "zoo.training._plot",
    "zoo.training.plugin": "zoo.training._plugin",
    "zoo.training.strategies": "zoo.training._strategies",
    "zoo.zero_shot": "zoo.core._zero_shot",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new} (a private module): import its public names from zoo",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__  # importlib sets the alias's spec on it next
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The module was imported under its new name already: give it back its own spec, so that
        ``importlib.reload`` and introspection see the real module."""
        own = self._specs.pop(module.__spec__.name, None) if module.__spec__ else None
        if own is not None:
            module.__spec__ = own


def install() -> None:
    """Let the old module paths resolve (once per process)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
