"""Embeddings for evaluation, through ``zoo embed``'s resumable path and kept between runs.

Each (model, settings, item set) is embedded once into a parquet file named by a digest of the
embedding's provenance (model, revision, weight sha256, runtime, pooling, normalisation, prompt,
layers, truncation, zoo version) and of every item's content: adding a model to a comparison, or
running it again, re-embeds nothing already done, and a run killed part way resumes from its last
chunk. The pace each set was embedded at is kept beside it, so a leaderboard built from cached
rows still reports the speed measured when they were computed.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.embeddings._embed import default_workers, embed_to_file
from zoo.embeddings._embedding_file import read_embeddings
from zoo.store._atomic import write_json_atomic
from zoo.store._provenance import embedding_provenance
from zoo.store._settings import zoo_home

from ._task import Embedded, ItemSet

if TYPE_CHECKING:
    from zoo.core._embed_options import EmbedOptions
    from zoo.core._model import Model


def default_cache_dir() -> Path:
    """``ZOO_HOME/evaluations``: where evaluation embeddings are kept unless told otherwise."""
    return zoo_home() / "evaluations"


def cached_path(model: Model, options: EmbedOptions, inputs_digest: str, items: ItemSet, cache_dir: Path) -> Path:
    """The file that holds (or will hold) these rows: see the module."""
    provenance = embedding_provenance(model.spec, model.files, options=options, runtime=model.runtime)
    provenance.pop("source", None)  # where the weights were read from; their sha256 is what counts
    key = hashlib.sha256(json.dumps({"embedding": provenance, "inputs": inputs_digest}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:24]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.name).strip("_")[-48:]
    return cache_dir / f"{slug}-{items.name}-{key}.parquet"


def embed_cached(model: Model, options: EmbedOptions, items: ItemSet, cache_dir: Path, *, batch_size: int = 32,
                 progress: bool = True) -> Embedded:
    """``items``' rows from ``model`` with ``options``: read from the cache, or embedded into it."""
    source = items.source
    path = cached_path(model, options, source.path, items, cache_dir)
    pace_file = path.with_name(path.name + ".pace.json")
    if not path.is_file():
        summary = embed_to_file(model, source, path, batch_size=batch_size, progress=progress, options=options,
                                num_workers=default_workers(model.device) if items.media else 0)
        fresh = summary.rows - summary.inputs_done_before
        if fresh:
            write_json_atomic(pace_file, {"items": fresh, "seconds": summary.seconds})
    pace = json.loads(pace_file.read_text()) if pace_file.is_file() else None
    return Embedded(read_embeddings(path).rows, path, pace["items"] / pace["seconds"] if pace else None, options)
