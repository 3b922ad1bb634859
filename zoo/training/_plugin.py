"""The built-in training plugin: finetuning (the ``zoo_finetune`` hook) and the finetuned model
format (recognised in folders, loaded on top of its base model).

The core knows none of this: it calls the hooks, and this plugin answers them, as a third-party
trainer would.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.catalog._spec import ModelSpec
from zoo.core._encoder import Encoder
from zoo.core._model import Model
from zoo.store._manifest import MANIFEST, is_manifest_of, read_json
from zoo.store._model_files import ModelFiles

from ..hookspecs import RegisterAdapter, hookimpl
from ._config import FinetuneConfig
from ._contrastive import train_contrastive
from ._finetuned import FORMAT, FinetunedCheckpoint
from ._loop import finetune


@hookimpl
def zoo_register_adapters(register: RegisterAdapter) -> None:
    """Finetuned checkpoints load through the same hooks as any other model."""
    register(FinetunedCheckpoint.backend, FinetunedCheckpoint)


@hookimpl(tryfirst=True)
def zoo_spec_from_path(path: Path) -> ModelSpec | None:
    """A folder that ``finetune`` wrote: its ``zoo.json`` names the base model it requires."""
    if not is_manifest_of(path, FORMAT):
        return None
    return FinetunedCheckpoint.spec_for_path(path, read_json(path / MANIFEST))


@hookimpl
def zoo_load_pretrained(spec: ModelSpec, files: ModelFiles, adapter_class: type[Encoder],
                        requires: Mapping[str, Model]) -> Model | None:
    """A finetuned model is its base (already loaded by the loader) with the saved head on top."""
    if not issubclass(adapter_class, FinetunedCheckpoint):
        return None
    return FinetunedCheckpoint.attach(spec, files, requires[spec.requires[0]])


@hookimpl
def zoo_finetune(model: Model, train: Any, val: Any, config: FinetuneConfig) -> Any:
    """zoo's own training loops: a classifier (:mod:`zoo.training._loop`) or the embedding itself
    (:mod:`zoo.training._contrastive`)."""
    if config.objective == "contrastive":
        return train_contrastive(model, train, val, config)
    return finetune(model, train, val, config)
