"""Where ``zoo embed`` reads its inputs from, streamed: a text file (one item per line), a CSV /
JSONL / parquet column, or a folder or glob of files. Each item comes with an id (line or row
number, or the file path) so that the output says which row is which."""

from __future__ import annotations

import csv
import functools
import glob
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ZooError
from .training.data import MEDIA_SUFFIXES

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")


@dataclass
class InputSource:
    """A stream of ``(id, item)`` pairs and how many there are."""

    description: str
    kind: str  # "lines", "table" or "files"
    path: str
    column: str | None = None

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        if self.kind == "lines":
            with open(self.path, encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    yield i, line.rstrip("\n").rstrip("\r")
        elif self.kind == "files":
            for path in self._files:
                yield path, path
        else:
            yield from self._rows()

    def __len__(self) -> int:
        if self.kind == "lines":
            with open(self.path, "rb") as fh:
                return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) + self._no_final_newline()
        if self.kind == "files":
            return len(self._files)
        if self.path.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows
        return sum(1 for _ in self._rows())

    def _no_final_newline(self) -> int:
        size = os.path.getsize(self.path)
        if size == 0:
            return 0
        with open(self.path, "rb") as fh:
            fh.seek(size - 1)
            return int(fh.read(1) != b"\n")

    @functools.cached_property
    def _files(self) -> list[str]:
        """The files of a ``files`` source, listed once: counting, fingerprinting and reading use
        the same list (a folder walk costs a stat per file)."""
        if os.path.isdir(self.path):
            found = [str(p) for p in sorted(Path(self.path).rglob("*"))
                     if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES]
        else:
            found = sorted(glob.glob(self.path, recursive=True))
        return found

    def _rows(self) -> Iterator[tuple[int, Any]]:
        column = self.column
        if self.path.endswith(".parquet"):
            import pyarrow.parquet as pq

            file = pq.ParquetFile(self.path)
            if column not in file.schema_arrow.names:
                raise ZooError(f"{self.path} has no column {column!r} (columns: {', '.join(file.schema_arrow.names)})")
            i = 0
            for batch in file.iter_batches(columns=[column], batch_size=4096):
                for value in batch.column(0).to_pylist():
                    yield i, value
                    i += 1
        elif self.path.endswith((".jsonl", ".ndjson")):
            with open(self.path, encoding="utf-8") as fh:
                for i, line in enumerate(l for l in fh if l.strip()):
                    row = json.loads(line)
                    if column not in row:
                        raise ZooError(f"{self.path} row {i} has no field {column!r}")
                    yield i, row[column]
        else:
            with open(self.path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh, delimiter="\t" if self.path.endswith(".tsv") else ",")
                if column not in (reader.fieldnames or []):
                    raise ZooError(f"{self.path} has no column {column!r} (columns: {', '.join(reader.fieldnames or [])})")
                for i, row in enumerate(reader):
                    yield i, row[column]

    def fingerprint(self) -> str:
        """Identifies the input set (path, size and mtime of each file read), for safe resuming."""
        digest = hashlib.sha256(f"{self.kind}|{self.path}|{self.column}".encode())
        paths = self._files if self.kind == "files" else [self.path]
        for path in paths:
            st = os.stat(path)
            digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]


def open_inputs(spec: str, *, column: str | None = None) -> InputSource:
    """Interpret ``zoo embed``'s INPUTS argument."""
    path = Path(spec)
    if path.is_dir():
        return InputSource(f"files under {spec}", "files", spec)
    if any(ch in spec for ch in "*?["):
        return InputSource(f"files matching {spec}", "files", spec)
    if not path.is_file():
        raise FileNotFoundError(f"no such input: {spec}")
    if path.suffix.lower() in TABLE_SUFFIXES:
        return InputSource(f"column {column or 'text'!r} of {spec}", "table", spec, column or "text")
    if path.suffix.lower() in MEDIA_SUFFIXES:
        return InputSource(spec, "files", spec)
    return InputSource(f"lines of {spec}", "lines", spec)
