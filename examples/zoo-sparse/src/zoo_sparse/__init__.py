"""zoo plugin: sparse embeddings (SPLADE-style, sentence-transformers' ``SparseEncoder``) as a model
kind of their own.

It registers the kind ``sparse`` with its row format (:class:`zoo_sparse.rows.SparseRows`: SciPy
CSR rows, written to parquet as ``indices`` / ``values``, searched through an inverted index), the
``sparse-encoder`` backend that runs a ``SparseEncoder`` folder, and recognises such folders, so
that ``zoo.load(folder)``, ``zoo embed``, ``zoo index`` and ``zoo search`` take them as they take a
dense model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zoo import ModelSpec, Source, hookimpl

__version__ = "0.1.0"

# The module classes only a SparseEncoder pipeline has (their paths moved between versions).
SPARSE_MODULES = ("MLMTransformer", "SpladePooling", "SparseStaticEmbedding", "SparseAutoEncoder")


@hookimpl
def zoo_register_kinds(register):
    register("sparse-encoder", description="embeds texts as sparse term weights over its vocabulary (featurize gives a "
                                   "SciPy CSR matrix; zoo embed, zoo index and zoo search take them)",
             verbs=("featurize",), rows="zoo_sparse.rows:SparseRows")


@hookimpl
def zoo_register_adapters(register):
    # A "module:Class" string: torch and sentence-transformers are imported only when a model loads.
    register("sparse-encoder", "zoo_sparse.adapter:SparseEncoderAdapter")


@hookimpl(tryfirst=True)
def zoo_spec_from_path(path: Path, kind: str | None) -> ModelSpec | None:
    """A folder ``SparseEncoder.save`` wrote: ``config_sentence_transformers.json`` says
    ``model_type: SparseEncoder``, or (older versions) ``modules.json`` names its modules."""
    reason = _sparse_folder(path)
    if reason is None:
        return None
    return ModelSpec(name=str(path), modality="text", backend="sparse-encoder", backend_id=str(path),
                     sources=(Source("path", str(path)),), kind="sparse-encoder",
                     config={"folder": {"format": "sentence-transformers", "kind": "sparse-encoder", "why": reason}})


def _sparse_folder(path: Path) -> str | None:
    """Why ``path`` is a SparseEncoder folder, or None when it is not one."""
    modules_file, config_file = path / "modules.json", path / "config_sentence_transformers.json"
    if not path.is_dir() or not modules_file.is_file():
        return None
    config = _json(config_file) if config_file.is_file() else {}
    if isinstance(config, dict) and config.get("model_type") == "SparseEncoder":
        return f"{config_file.name}: model_type 'SparseEncoder'"
    modules = _json(modules_file)
    names = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)] \
        if isinstance(modules, list) else []
    found = [n for n in names if n in SPARSE_MODULES]
    return f"modules.json: {', '.join(found)}" if found else None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None  # not this plugin's to judge: zoo's own reader names the file
