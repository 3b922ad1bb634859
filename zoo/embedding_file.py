"""Reading back what ``zoo embed`` wrote: ids, rows and provenance from a parquet or ``.npy`` file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ZooError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa


@dataclass
class EmbeddingFile:
    """An embedding table: ``rows[i]`` is the embedding of ``ids[i]``, whose input content hashes
    to ``hashes[i]``; ``provenance`` is zoo's metadata. A ``.npy`` file has neither (empty), nor
    has a parquet written before zoo recorded hashes (``hashes`` None)."""

    path: Path
    ids: list[Any]
    rows: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)
    hashes: list[str] | None = None


def read_embeddings(path: str | os.PathLike[str]) -> EmbeddingFile:
    """The whole of an embedding file zoo wrote (``.parquet``), or any 2-D ``.npy`` array."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise ZooError(f"no such embedding file: {path}")
    if path.suffix == ".npy":
        rows = np.load(path, allow_pickle=False)
        if rows.ndim != 2:
            raise ZooError(f"{path} holds a {rows.ndim}-D array; an embedding file is (N, D)")
        return EmbeddingFile(path, list(range(len(rows))), rows)
    if path.suffix != ".parquet":
        raise ZooError(f"{path.name} is not an embedding file: zoo reads the .parquet or .npy files `zoo embed` writes")
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = (table.schema.metadata or {}).get(b"zoo")
    if meta is None or "embedding" not in table.column_names:
        raise ZooError(f"{path} was not written by `zoo embed` (no embedding column with zoo's provenance); "
                       "embed the inputs with `zoo embed` first")
    hashes = table.column("content_sha256").to_pylist() if "content_sha256" in table.column_names else None
    return EmbeddingFile(path, table.column("id").to_pylist(), embedding_rows(table), json.loads(meta), hashes)


def embedding_rows(table: pa.Table) -> np.ndarray:
    """A table's fixed-size ``embedding`` column as an ``(N, D)`` array."""
    column = table.column("embedding").combine_chunks()
    return column.values.to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
