"""Reading back what ``zoo embed`` wrote: ids, rows and provenance from a parquet or ``.npy`` file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.catalog._registry import get_registry
from zoo.catalog._spec import a_kind
from zoo.core._quantize import needs_calibration
from zoo.core._rows import embedding_rows
from zoo.errors import ZooError

if TYPE_CHECKING:
    import numpy as np

    from zoo.core._rows import RowFormat


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


#: the columns zoo writes around the rows; any other column of an embedding file is one the user kept
ZOO_COLUMNS = ("id", "content_sha256")


def kept_columns(names: list[str], provenance: dict[str, Any] | None = None) -> list[str]:
    """The user's columns among a table's column ``names``, in order: neither zoo's nor the
    rows' own (those of the file's row format, read from its ``provenance``; dense rows' without)."""
    rows = row_format_of(provenance or {}).columns
    return [name for name in names if name not in ZOO_COLUMNS and name not in rows]


def row_format_of(provenance: dict[str, Any]) -> RowFormat:
    """The row format of an embedding file, by the model kind its provenance records (none: an
    embedder's dense rows)."""
    return get_registry().kind(provenance.get("kind") or "embedder").row_format()


def require_dense(path: str | os.PathLike[str], provenance: dict[str, Any], what: str) -> None:
    """Refuse, by name, a file of another kind's rows where ``what`` reads dense vectors."""
    kind = provenance.get("kind") or "embedder"
    if kind != "embedder":
        raise ZooError(f"{path} holds the rows of {a_kind(kind)} model ({row_format_of(provenance).description}), "
                       f"and {what} reads an embedder's dense vectors; zoo index and zoo search read these")


def read_embeddings(path: str | os.PathLike[str], *, what: str = "read_embeddings") -> EmbeddingFile:
    """The whole of an embedding file zoo wrote (``.parquet``), or any 2-D ``.npy`` array, for
    ``what`` (named in the error for a file of another kind's rows)."""
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
    require_dense(path, meta, what)
    table = pq.read_table(path)
    hashes = table.column("content_sha256").to_pylist() if "content_sha256" in table.column_names else None
    columns = {name: table.column(name).to_pylist() for name in kept_columns(table.column_names)}
    return EmbeddingFile(path, table.column("id").to_pylist(), embedding_rows(table), meta, hashes, columns)


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance of a parquet file ``zoo embed`` wrote (read from its footer alone), or a
    :class:`~zoo.errors.ZooError` saying the file is not one."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.suffix != ".parquet" or not path.is_file():
        raise ZooError(f"{path}: expected a .parquet file that `zoo embed` wrote")
    schema = pq.read_schema(path)
    meta = (schema.metadata or {}).get(b"zoo")
    provenance = json.loads(meta) if meta is not None else None
    if not isinstance(provenance, dict) or not set(row_format_of(provenance).columns) <= set(schema.names):
        raise ZooError(f"{path} was not written by `zoo embed` (no rows with zoo's provenance); embed the inputs "
                       "with `zoo embed` first")
    return provenance


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
    rows: Any  # (N, D) float32 for an embedder's file; its row format's rows otherwise
    hashes: list[str | None]
    columns: dict[str, list[Any]]


def embedding_batches(path: str | os.PathLike[str], rows: int | None = None) -> Iterator[EmbeddingBatch]:
    """An embedding file, ``rows`` at a time (default: its row format's ``read_rows``), so that a
    large file is never held whole, its rows read by the file's row format (:func:`row_format_of`).
    Quantized dense rows come back as float32 (:func:`~zoo.core._quantize.dequantize`: int8 / uint8
    bucket centres, binary bits as +1 / -1), so that their cosines can be compared."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = comparable_provenance(path)
    row_format = row_format_of(meta)
    file = pq.ParquetFile(path)
    for batch in file.iter_batches(batch_size=rows or row_format.read_rows):
        table = pa.Table.from_batches([batch])
        hashes = table.column("content_sha256").to_pylist() if "content_sha256" in table.column_names \
            else [None] * len(table)
        yield EmbeddingBatch(table.column("id").to_pylist(), row_format.read(table, meta), hashes,
                             {name: table.column(name).to_pylist() for name in kept_columns(table.column_names, meta)})
