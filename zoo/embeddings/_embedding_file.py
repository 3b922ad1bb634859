"""Reading back what ``zoo embed`` wrote: ids, rows and provenance from a parquet or ``.npy`` file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.core._quantize import dequantize, needs_calibration
from zoo.errors import ZooError

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
    #: the user's columns kept beside the rows (``zoo embed --keep-columns``), by name
    columns: dict[str, list[Any]] = field(default_factory=dict)


#: the columns zoo writes; any other column of an embedding file is one the user kept
ZOO_COLUMNS = ("id", "embedding", "content_sha256")


def kept_columns(names: list[str]) -> list[str]:
    """The user's columns among a table's column ``names``, in order."""
    return [name for name in names if name not in ZOO_COLUMNS]


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

    meta = read_provenance(path)
    table = pq.read_table(path)
    hashes = table.column("content_sha256").to_pylist() if "content_sha256" in table.column_names else None
    columns = {name: table.column(name).to_pylist() for name in kept_columns(table.column_names)}
    return EmbeddingFile(path, table.column("id").to_pylist(), embedding_rows(table), meta, hashes, columns)


def embedding_rows(table: pa.Table) -> np.ndarray:
    """A table's fixed-size ``embedding`` column as an ``(N, D)`` array."""
    column = table.column("embedding").combine_chunks()
    return column.values.to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance of a parquet file ``zoo embed`` wrote (read from its footer alone), or a
    :class:`~zoo.errors.ZooError` saying the file is not one."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.suffix != ".parquet" or not path.is_file():
        raise ZooError(f"{path}: expected a .parquet file that `zoo embed` wrote")
    schema = pq.read_schema(path)
    meta = (schema.metadata or {}).get(b"zoo")
    if meta is None or "embedding" not in schema.names:
        raise ZooError(f"{path} was not written by `zoo embed` (no embedding column with zoo's provenance); "
                       "embed the inputs with `zoo embed` first")
    return json.loads(meta)


def comparable_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`read_provenance`, for a file whose rows search and duplicates compare: float32, or
    quantized rows that :func:`embedding_batches` reads back as float32."""
    meta = read_provenance(path)
    if needs_calibration(meta.get("precision", "float32")) and not (meta.get("calibration") or {}).get("ranges"):
        raise ZooError(f"{path} holds {meta['precision']} embeddings without the calibration ranges they were "
                       "bucketed with; embed it again with zoo embed, which records them")
    return meta


@dataclass
class EmbeddingBatch:
    """Consecutive rows of an embedding file: ids, rows, content hashes (None in files written
    before zoo recorded them) and the user's kept columns, by name."""

    ids: list[Any]
    rows: np.ndarray
    hashes: list[str | None]
    columns: dict[str, list[Any]]


def embedding_batches(path: str | os.PathLike[str], rows: int = 65_536) -> Iterator[EmbeddingBatch]:
    """An embedding file, ``rows`` at a time, so that a large file is never held whole. Quantized
    rows come back as float32 (:func:`~zoo.core._quantize.dequantize`: int8 / uint8 bucket
    centres, binary bits as +1 / -1), so that their cosines can be compared."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = comparable_provenance(path)
    precision, ranges = meta.get("precision", "float32"), (meta.get("calibration") or {}).get("ranges")
    file = pq.ParquetFile(path)
    for batch in file.iter_batches(batch_size=rows):
        table = pa.Table.from_batches([batch])
        hashes = table.column("content_sha256").to_pylist() if "content_sha256" in table.column_names \
            else [None] * len(table)
        vectors = dequantize(embedding_rows(table), precision, int(meta["embed_dim"]), ranges)
        yield EmbeddingBatch(table.column("id").to_pylist(), vectors, hashes,
                             {name: table.column(name).to_pylist() for name in kept_columns(table.column_names)})


def unit_rows(rows: Any) -> np.ndarray:
    """``rows`` as contiguous float32 of length 1, so that inner products are cosines (a zero row
    stays zero)."""
    import numpy as np

    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
