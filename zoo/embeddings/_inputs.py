"""Where ``zoo embed`` reads its inputs from, streamed: a text file (one item per line), a CSV / TSV /
JSONL / parquet column, or a folder or glob of files. Each item comes with an id (line or row
number, or the file path) so that the output says which row is which.

Counting and reading follow one rule (a line ends at ``\\n``, nothing else), so the count that sizes
the resumable chunks is the number of rows written. A line that is not UTF-8 becomes that row's
error (skippable), naming the file and line.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    ``files_as_text`` reads each listed file's content as one text item. A table's ``id_column``
    gives each row's id (default: its row number) and its ``keep`` columns travel beside the
    embedding; a text file's one column to keep is ``text``, the line itself. An ``items`` source
    holds its inputs in memory (:func:`items_source`), numbered from 0.
    """

    description: str
    kind: str  # "lines", "table", "files" or "items"
    path: str
    column: str | None = None
    suffixes: frozenset[str] = frozenset()
    files_as_text: bool = False
    id_column: str | None = None
    keep: tuple[str, ...] = ()
    items: tuple[Any, ...] = ()
    #: whether the inputs are files whose bytes are their content (not their path's text)
    media: bool = False

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for item_id, item, _ in self.rows():
            yield item_id, item

    def rows(self) -> Iterator[tuple[Any, Any, tuple[Any, ...]]]:
        """``(id, item, the values of the kept columns)`` of every input, in order."""
        if self.kind == "lines":
            for i, line in self._lines():
                yield i, line, ((None if isinstance(line, Unreadable) else line,) if self.keep else ())
        elif self.kind == "files":
            for path in self._files:
                yield path, _read_text(path) if self.files_as_text else path, ()
        elif self.kind == "items":
            for i, item in enumerate(self.items):
                yield i, item, ()
        else:
            parts = self.parts()  # {"text": column, "image": column} for combined items; else one column
            wanted = list(dict.fromkeys([*parts.values(), *([self.id_column] if self.id_column else []), *self.keep]))
            for i, row in enumerate(iter_rows(self.path, wanted)):
                item = {part: row[c] for part, c in parts.items()} if "item" not in parts else row[parts["item"]]
                yield row[self.id_column] if self.id_column else i, item, tuple(row[c] for c in self.keep)

    def parts(self) -> dict[str, str]:
        """A table's columns by the part of an item each gives: ``--column text=caption,image=photo``
        gives combined items (``{"text": ..., "image": ...}``); a plain column name, whole items."""
        assert self.column is not None  # a table's column is always named (open_inputs)
        if "=" not in self.column:
            return {"item": self.column}
        pairs = [pair.split("=", 1) for pair in self.column.split(",")]
        if any(len(pair) != 2 or not pair[0].strip() or not pair[1].strip() for pair in pairs):
            raise ZooError(f"--column {self.column!r}: name each part's column as PART=COLUMN, e.g. "
                           "text=caption,image=photo")
        return {part.strip(): column.strip() for part, column in pairs}

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
        if self.kind == "items":
            return len(self.items)
        return count_rows(self.path, next(iter(self.parts().values())))

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
        if self.kind == "items":
            return [item for item in self.items if isinstance(item, str)] if self.media else []
        return list(self._files) if self.kind == "files" else [self.path]

    @property
    def hash_kind(self) -> str:
        """How :func:`content_hash` reads an input: ``files`` where the input names a file whose
        bytes are its content."""
        return "files" if self.kind == "files" or self.media else self.kind

    def fingerprint(self) -> str:
        """Identifies the input set (path, size and mtime of each file read), for safe resuming;
        :func:`chunk_digest` catches edits that keep both."""
        digest = hashlib.sha256(f"{self.kind}|{self.path}|{self.column}|{self.files_as_text}|{self.id_column}|"
                                f"{','.join(self.keep)}".encode())
        for path in self.paths():
            st = os.stat(path)
            digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]


def items_source(items: Sequence[Any], description: str, *, media: bool = False) -> InputSource:
    """Inputs held in memory, as ``zoo embed`` streams the others: ids are positions, and the
    fingerprint that keys a resumed run is a digest of every input's content (``media``: files,
    hashed by their bytes)."""
    kind = "files" if media else "items"
    digest = chunk_digest(range(len(items)), (content_hash(item, kind) for item in items))
    return InputSource(description, "items", digest, items=tuple(items), media=media)


def _read_text(path: str) -> Any:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Unreadable(f"cannot read {path} as UTF-8 text: {exc}")


def content_hash(item: Any, kind: str) -> str:
    """sha256 of an input's content: a file's bytes for files, a text's UTF-8 otherwise. Stored
    with each embedding row, so an index can tell an input it already holds, whatever its id."""
    digest = hashlib.sha256()
    if isinstance(item, Mapping):  # a combined item: each part's content in order, a media part's file by its bytes
        for part in item:
            digest.update(f"{part}:{content_hash(item[part], 'items' if part == 'text' else 'files')};".encode())
    elif kind == "files" and isinstance(item, str) and os.path.isfile(item):
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
                id_column: str | None = None, keep: Sequence[str] = (),
                registry: Registry | None = None) -> InputSource:
    """Interpret ``zoo embed``'s INPUTS argument for a model of ``modality``.

    A text file gives one item per line, a CSV / TSV / JSONL / parquet table gives ``column``
    (default ``text``), and a folder or glob gives the files with the modality's registered
    suffixes. Media of another modality is refused by name; ``files_as_text`` reads each file's
    content as one text item. A table's ``id_column`` names each row and its ``keep`` columns
    travel with the rows (a text file keeps ``text``, its lines)."""
    source = _open_inputs(spec, modality, column, files_as_text, registry or get_registry())
    return _with_columns(source, id_column, tuple(keep))


def _with_columns(source: InputSource, id_column: str | None, keep: tuple[str, ...]) -> InputSource:
    """``source`` with the user's columns, checked against what that kind of input has."""
    if not id_column and not keep:
        return source
    if source.kind != "table":
        has = "one column to keep, text (the line itself); its ids are line numbers" if source.kind == "lines" \
            else "no columns: each file's id is its path"
        if id_column or set(keep) - ({"text"} if source.kind == "lines" else set()):
            raise ZooError(f"{source.description} has {has}; --id-column and --keep-columns name the columns of a "
                           "CSV / TSV / JSONL / parquet table")
        return dataclasses.replace(source, keep=keep)
    reserved = sorted({"id", "embedding", "content_sha256"} & set(keep))
    if reserved or len(set(keep)) != len(keep):
        clash = reserved[0] if reserved else next(c for c in keep if keep.count(c) > 1)
        raise ZooError(f"--keep-columns {clash!r}: the output already has a column of that name (id, embedding, "
                       "content_sha256) or it is named twice; rename the column in the table")
    return dataclasses.replace(source, id_column=id_column, keep=keep)


def _open_inputs(spec: str, modality: str, column: str | None, files_as_text: bool, registry: Registry
                 ) -> InputSource:
    suffixes = frozenset(registry.modality(modality).suffixes)
    other_suffixes = registry.media_suffixes() - suffixes
    path = Path(spec)
    is_glob = any(ch in spec for ch in "*?[")
    if not (path.exists() or is_glob):
        raise FileNotFoundError(f"no such input: {spec}")
    if path.is_file() and is_table(path):
        what = f"columns {column}" if column and "=" in column else f"column {column or 'text'!r}"
        return InputSource(f"{what} of {spec}", "table", spec, column or "text")
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
