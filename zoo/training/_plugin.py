"""The built-in training plugin: finetuning (the ``zoo_finetune`` hook) and the finetuned model
format (recognised in folders, loaded on top of its base model).

The core knows none of this: it calls the hooks, and this plugin answers them, as a third-party
trainer would.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.catalog._spec import ModelSpec
from zoo.core._encoder import Encoder
from zoo.core._model import Model
from zoo.store._manifest import MANIFEST, is_manifest_of, read_json
from zoo.store._model_files import ModelFiles

from ..hookspecs import RegisterAdapter, RegisterCommand, hookimpl
from ._config import FinetuneConfig
from ._contrastive import train_contrastive
from ._finetuned import FORMAT, FinetunedCheckpoint
from ._loop import finetune
from ._merge import merge


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
def zoo_register_commands(register: RegisterCommand) -> None:
    """``zoo merge``: a verb of this plugin, registered as any plugin's is."""
    p = register("merge", _cmd_merge, help="interpolate a finetuned model with its base (WiSE-FT)")
    p.add_argument("base", help="the model it was finetuned from")
    p.add_argument("tuned", help="the folder finetune wrote")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="the finetuned weights' share: 0 gives the base, 1 the finetuned model (default 0.5)")
    p.add_argument("-o", "--output", required=True, help="output folder (zoo.load reads it back)")


def _cmd_merge(args: argparse.Namespace) -> int:
    out = merge(args.base, args.tuned, args.alpha, args.output)
    print(f"wrote {out}: {args.alpha:g} of the way from {args.base} to {args.tuned} (zoo.load reads it)")
    return 0


@hookimpl
def zoo_finetune(model: Model, train: Any, val: Any, config: FinetuneConfig) -> Any:
    """zoo's own training loops: a classifier (:mod:`zoo.training._loop`) or the embedding itself
    (:mod:`zoo.training._contrastive`)."""
    if config.objective == "contrastive":
        return train_contrastive(model, train, val, config)
    return finetune(model, train, val, config)
