"""Labelled examples for finetuning, from Python or from disk, with string labels mapped to indices."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.catalog._registry import get_registry
from zoo.embeddings._tables import is_table, iter_rows, table_columns

from ..errors import ZooError


@dataclass
class Examples:
    """Inputs and their labels (as given: strings or ints), in the same order."""

    inputs: list[Any]
    labels: list[Any]

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, indices: Sequence[int]) -> Examples:
        return Examples([self.inputs[i] for i in indices], [self.labels[i] for i in indices])


def read_examples(data: Any, *, text_column: str = "text", label_column: str = "label") -> Examples:
    """Examples from ``(inputs, labels)``, a sequence of ``(input, label)`` pairs, a folder with one
    subfolder per class, or a CSV / TSV / JSONL / parquet file with text and label columns."""
    if isinstance(data, (str, os.PathLike)):
        return _read_path(Path(data), text_column, label_column)
    if isinstance(data, Examples):
        return data
    if isinstance(data, tuple) and len(data) == 2 and not _is_pair(data):
        inputs, labels = list(data[0]), list(data[1])
        if len(inputs) != len(labels):
            raise ZooError(f"got {len(inputs)} inputs but {len(labels)} labels")
        return Examples(inputs, labels)
    pairs = list(data)
    for i, pair in enumerate(pairs):
        if not _is_pair(pair):
            raise ZooError(f"training example {i} is not an (input, label) pair: {type(pair).__name__}")
    return Examples([p[0] for p in pairs], [p[1] for p in pairs])


def _is_pair(obj: Any) -> bool:
    return isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[1], (str, int))


def _read_path(path: Path, text_column: str, label_column: str) -> Examples:
    if path.is_dir():
        return _read_class_folders(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such training data: {path}")
    if not is_table(path):
        raise ZooError(f"unsupported training data {path.name!r}: use a class folder, .csv, .tsv, .jsonl "
                       "or .parquet")
    rows = list(iter_rows(path, [text_column, label_column]))
    return Examples([r[text_column] for r in rows], [r[label_column] for r in rows])


def _read_class_folders(path: Path) -> Examples:
    """``path/<label>/<file>``: every media file of a registered modality, labelled by its folder."""
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ZooError(f"{path} has no class subfolders (expected {path}/<label>/<file>)")
    suffixes = get_registry().media_suffixes()
    inputs, labels = [], []
    for folder in classes:
        for file in sorted(folder.rglob("*")):
            if file.is_file() and file.suffix.lower() in suffixes:
                inputs.append(str(file))
                labels.append(folder.name)
    return Examples(inputs, labels)


def label_index(labels: Iterable[Any]) -> list[Any]:
    """The sorted distinct labels; a label's index in this list is its class index."""
    distinct = set(labels)
    try:
        return sorted(distinct)
    except TypeError:
        return sorted(distinct, key=str)


def stratified_split(examples: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Hold out ``fraction`` of each class (at least one example where a class has two or more)."""
    if not 0 < fraction < 1:
        raise ValueError(f"val fraction must lie in (0, 1), got {fraction}")
    rng = random.Random(seed)
    by_class: dict[Any, list[int]] = {}
    for i, label in enumerate(examples.labels):
        by_class.setdefault(label, []).append(i)
    train, val = [], []
    for label in label_index(by_class):
        indices = by_class[label]
        rng.shuffle(indices)
        n_val = max(1, round(len(indices) * fraction)) if len(indices) > 1 else 0
        val += indices[:n_val]
        train += indices[n_val:]
    return examples.subset(sorted(train)), examples.subset(sorted(val))


@dataclass
class Pairs:
    """Contrastive examples: ``anchors[i]`` goes with ``positives[i]`` (and, in triplets, is
    farther from ``negatives[i]``); every other positive of a batch is a negative too."""

    anchors: list[Any]
    positives: list[Any]
    negatives: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.anchors)

    def subset(self, indices: Sequence[int]) -> Pairs:
        pick = [self.anchors[i] for i in indices], [self.positives[i] for i in indices]
        return Pairs(*pick, [self.negatives[i] for i in indices] if self.negatives is not None else None)

    def columns(self) -> list[list[Any]]:
        """Anchors, positives and (if any) negatives: the inputs of one batch, column by column."""
        return [self.anchors, self.positives, *([self.negatives] if self.negatives is not None else [])]


def read_pairs(data: Any, *, anchor_column: str = "anchor", positive_column: str = "positive",
               negative_column: str = "negative") -> Pairs:
    """Pairs or triplets from a sequence of ``(anchor, positive[, negative])`` tuples, a
    :class:`Pairs`, or a CSV / TSV / JSONL / parquet file with anchor and positive columns (and a
    negative column, used where the file has one)."""
    if isinstance(data, Pairs):
        return data
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file() or not is_table(path):
            raise ZooError(f"contrastive training data must be a CSV / TSV / JSONL / parquet file with "
                           f"{anchor_column!r} and {positive_column!r} columns, not {path}")
        names = [anchor_column, positive_column, *([negative_column] if negative_column in table_columns(path)
                                                    else [])]
        rows = list(iter_rows(path, names))
        data = [tuple(row[name] for name in names) for row in rows]
    if isinstance(data, dict):  # columns by name, as a table has them
        data = list(zip(*(data[name] for name in (anchor_column, positive_column, negative_column) if name in data)))
    elif isinstance(data, tuple):
        raise ZooError("contrastive examples are a list of (anchor, positive[, negative]) tuples, a dict of columns "
                       f"({anchor_column!r}, {positive_column!r}...) or a table file; a tuple of columns would be "
                       "read as examples")
    rows = list(data)
    _check_tuples(rows)
    columns = [list(column) for column in zip(*rows)]
    return Pairs(columns[0], columns[1], columns[2] if len(columns) == 3 else None)


def _check_tuples(rows: list[Any]) -> None:
    """Refuse anything but a non-empty list of pairs, or of triplets, naming the first bad one."""
    if not rows:
        raise ZooError("no contrastive training examples")
    for i, row in enumerate(rows):
        if not isinstance(row, (tuple, list)) or len(row) not in (2, 3):
            raise ZooError(f"contrastive example {i} is not an (anchor, positive) pair or an (anchor, positive, "
                           f"negative) triplet: {type(row).__name__}")
        if len(row) != len(rows[0]):
            raise ZooError(f"contrastive example {i} has {len(row)} parts and example 0 has {len(rows[0])}: give "
                           "pairs or triplets, not both")


def fingerprint(rows: Iterable[Sequence[Any]]) -> str:
    """Identifies training examples by their content (texts, bytes, array and image pixels, labels),
    for resuming a run and for the saved model's provenance."""
    import hashlib

    digest = hashlib.sha256()
    for row in rows:
        for value in row:
            part = content_key(value)
            digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()[:16]


def content_key(value: Any) -> bytes:
    """One example's value as bytes: what it holds, not what type it is."""
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogatepass")
    if isinstance(value, (bytes, bytearray)):
        return b"b" + bytes(value)
    if isinstance(value, (tuple, list)):  # an audio (waveform, rate) pair
        return b"t" + b"".join(content_key(v) for v in value)
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if hasattr(value, "tobytes") and hasattr(value, "shape"):  # a numpy array
        return f"a{value.dtype}{value.shape}".encode() + value.tobytes()
    if hasattr(value, "tobytes") and hasattr(value, "mode"):  # a PIL image
        return f"i{value.mode}{value.size}".encode() + value.tobytes()
    return b"r" + repr(value).encode()
