"""Rows of a CSV, TSV, JSONL or parquet file: the one reader behind ``zoo embed`` table inputs and
finetuning data, so both accept the same files and fail with the same messages; and the one writer
of such tables (mined triplets), so what zoo writes it reads back."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from zoo.errors import ZooError, did_you_mean
from zoo.store._atomic import atomic_path

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")


def is_table(path: str | Path) -> bool:
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def _missing(path: Path, columns: Sequence[str], have: Sequence[str]) -> None:
    missing = [c for c in columns if c not in have]
    if missing:
        raise ZooError(f"{path} has no column {missing[0]!r}{did_you_mean(missing[0], have)} "
                       f"(columns: {', '.join(have) or 'none'}); choose one with --column")


def iter_rows(path: str | Path, columns: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Each row's ``columns``, in file order; a missing column or bad JSON line names the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        file = pq.ParquetFile(path)
        _missing(path, columns, file.schema_arrow.names)
        for batch in file.iter_batches(columns=list(columns), batch_size=4096):
            yield from batch.to_pylist()
    elif suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8", newline="\n") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ZooError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise ZooError(f"{path}:{line_no}: expected a JSON object per line")
                _missing(Path(f"{path}:{line_no}"), columns, list(row))
                yield {c: row[c] for c in columns}
    elif suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            _missing(path, columns, reader.fieldnames or [])
            for row in reader:
                yield {c: row[c] for c in columns}
    else:
        raise ZooError(f"unsupported table {path.name!r}: use {', '.join(TABLE_SUFFIXES)}")


def table_columns(path: str | Path) -> list[str]:
    """The column names of a table: a parquet schema's, a CSV / TSV header's, or the keys of a
    JSONL file's first object."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    with open(path, newline="", encoding="utf-8") as fh:
        if suffix in (".csv", ".tsv"):
            return next(csv.reader(fh, delimiter="\t" if suffix == ".tsv" else ","), [])
        first = next((line for line in fh if line.strip()), "{}")
    try:
        row = json.loads(first)
    except json.JSONDecodeError as exc:
        raise ZooError(f"{path}: invalid JSON on its first line ({exc.msg})") from None
    return list(row) if isinstance(row, dict) else []


def count_rows(path: str | Path, column: str) -> int:
    """How many rows :func:`iter_rows` yields (parquet reads its footer only)."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return sum(1 for _ in iter_rows(path, [column]))


def write_rows(path: str | os.PathLike[str], columns: dict[str, list[Any]]) -> Path:
    """Write ``columns`` (equal lengths, by name, in order) as the table ``path``'s suffix names,
    atomically: a parquet file keeps each column's type, a CSV / TSV / JSONL file is read back by
    :func:`iter_rows` as it was written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not is_table(path):
        raise ZooError(f"cannot write a table to {path.name!r}: use {', '.join(TABLE_SUFFIXES)}")
    names = list(columns)
    rows = zip(*columns.values())
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table(columns), tmp)
        elif suffix in (".jsonl", ".ndjson"):
            with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
                fh.writelines(json.dumps(dict(zip(names, row)), ensure_ascii=False) + "\n" for row in rows)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh, delimiter="\t" if suffix == ".tsv" else ",")
                writer.writerow(names)
                writer.writerows(rows)
    return path
