"""Where ``zoo embed`` reads its inputs from, streamed: a text file (one item per line), a CSV / TSV /
JSONL / parquet column, or a folder or glob of files. Each item comes with an id (line or row
number, or the file path) so that the output says which row is which.

Counting and reading follow one rule (a line ends at ``\\n``, nothing else), so the count that sizes
the resumable chunks is the number of rows written. A line that is not UTF-8 becomes that row's
error (skippable), naming the file and line.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.catalog._registry import Registry, get_registry
from zoo.errors import Unreadable, ZooError

from ._tables import count_rows, is_table, iter_rows

_CHUNK = 1 << 20


@dataclass
class InputSource:
    """A stream of ``(id, item)`` pairs and how many there are.

    ``suffixes`` are the media suffixes of the model's modality (what a folder is listed by);
    ``files_as_text`` reads each listed file's content as one text item.
    """

    description: str
    kind: str  # "lines", "table" or "files"
    path: str
    column: str | None = None
    suffixes: frozenset[str] = frozenset()
    files_as_text: bool = False

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        if self.kind == "lines":
            yield from self._lines()
        elif self.kind == "files":
            for path in self._files:
                yield path, _read_text(path) if self.files_as_text else path
        else:
            assert self.column is not None  # a table's column is always named (open_inputs)
            for i, row in enumerate(iter_rows(self.path, [self.column])):
                yield i, row[self.column]

    def _lines(self) -> Iterator[tuple[int, Any]]:
        with open(self.path, "rb") as fh:  # binary: split on b"\n" only, as __len__ counts
            for i, raw in enumerate(fh):
                try:
                    yield i, raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield i, Unreadable(f"{self.path} line {i + 1} is not UTF-8 ({exc.reason} at byte "
                                        f"{exc.start}); re-encode the file as UTF-8")

    def __len__(self) -> int:
        if self.kind == "lines":
            with open(self.path, "rb") as fh:
                newlines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(_CHUNK), b""))
            return newlines + self._no_final_newline()
        if self.kind == "files":
            return len(self._files)
        assert self.column is not None  # a table's column is always named (open_inputs)
        return count_rows(self.path, self.column)

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
            return [str(p) for p in sorted(Path(self.path).rglob("*"))
                    if p.is_file() and (self.files_as_text or p.suffix.lower() in self.suffixes)]
        if os.path.isfile(self.path):
            return [self.path]
        return sorted(p for p in glob.glob(self.path, recursive=True) if os.path.isfile(p))

    def paths(self) -> list[str]:
        """Every file this source reads."""
        return list(self._files) if self.kind == "files" else [self.path]

    def fingerprint(self) -> str:
        """Identifies the input set (path, size and mtime of each file read), for safe resuming;
        :func:`chunk_digest` catches edits that keep both."""
        digest = hashlib.sha256(f"{self.kind}|{self.path}|{self.column}|{self.files_as_text}".encode())
        for path in self.paths():
            st = os.stat(path)
            digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]


def _read_text(path: str) -> Any:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Unreadable(f"cannot read {path} as UTF-8 text: {exc}")


def content_hash(item: Any, kind: str) -> str:
    """sha256 of an input's content: a file's bytes for files, a text's UTF-8 otherwise. Stored
    with each embedding row, so an index can tell an input it already holds, whatever its id."""
    digest = hashlib.sha256()
    if kind == "files" and isinstance(item, str) and os.path.isfile(item):
        with open(item, "rb") as fh:
            while block := fh.read(_CHUNK):
                digest.update(block)
    else:
        digest.update((item if isinstance(item, str) else repr(item)).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def chunk_digest(ids: Iterable[Any], hashes: Iterable[str]) -> str:
    """A hash of one chunk's ids and content hashes, so that a resumed run recomputes a chunk
    whose inputs changed even where size and mtime did not."""
    digest = hashlib.sha256()
    for item_id, item_hash in zip(ids, hashes):
        digest.update(repr(item_id).encode("utf-8", "surrogatepass") + item_hash.encode())
    return digest.hexdigest()


def open_inputs(spec: str, *, modality: str = "text", column: str | None = None, files_as_text: bool = False,
                registry: Registry | None = None) -> InputSource:
    """Interpret ``zoo embed``'s INPUTS argument for a model of ``modality``.

    A text file gives one item per line, a CSV / TSV / JSONL / parquet table gives ``column``
    (default ``text``), and a folder or glob gives the files with the modality's registered
    suffixes. Media of another modality is refused by name; ``files_as_text`` reads each file's
    content as one text item."""
    registry = registry or get_registry()
    suffixes = frozenset(registry.modality(modality).suffixes)
    other_suffixes = registry.media_suffixes() - suffixes
    path = Path(spec)
    is_glob = any(ch in spec for ch in "*?[")
    if not (path.exists() or is_glob):
        raise FileNotFoundError(f"no such input: {spec}")
    if path.is_file() and is_table(path):
        return InputSource(f"column {column or 'text'!r} of {spec}", "table", spec, column or "text")
    if path.is_dir() or is_glob or path.suffix.lower() in suffixes | other_suffixes:
        _check_files_fit(spec, path, modality, suffixes, files_as_text)
        what = spec if path.is_file() else f"files under {spec}" if path.is_dir() else f"files matching {spec}"
        return InputSource(what, "files", spec, suffixes=suffixes, files_as_text=files_as_text)
    if modality != "text":
        raise ZooError(f"{spec} is a text file, but the model is a {modality} model: give a folder or glob of "
                       f"{modality} files ({', '.join(sorted(suffixes)) or 'none registered'}), or a CSV / parquet "
                       "table with a column of file paths (--column)")
    return InputSource(f"lines of {spec}", "lines", spec)


def _check_files_fit(spec: str, path: Path, modality: str, suffixes: frozenset[str], files_as_text: bool) -> None:
    """Refuse media files the model cannot read: any file for a model with no media of its own
    (text) unless read as text, and a single file of another modality."""
    if not suffixes and not files_as_text:
        raise ZooError(f"{spec} is a folder, glob or media file, but the model is a {modality} model: give a "
                       "text file (one item per line) or a table column (--column), or pass --files-as-text "
                       "to embed each file's content")
    if path.is_file() and suffixes and path.suffix.lower() not in suffixes:
        raise ZooError(f"{spec} is not a {modality} file (suffix {path.suffix!r}); give {modality} files "
                       f"({', '.join(sorted(suffixes))})")
