"""Near-duplicate inputs in an embedding file: groups of rows whose cosine similarity reaches a
threshold, found with a FAISS range search batch by batch (memory grows with the rows and the
pairs found, never with N²) and joined transitively (a ~ b and b ~ c put a, b, c in one group)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from zoo.core._rows import faiss_module, unit_rows
from zoo.embeddings._embedding_file import comparable_provenance, embedding_batches, require_dense

#: cosine at or above which two inputs count as near-duplicates by default. Measured with
#: EfficientNet-Lite0 on scikit-image's photos: a JPEG re-encode at quality 75 keeps 0.92 or more,
#: a copy at 2/3 the size 0.94, while distinct photos stay under 0.5; with MiniLM, a text with
#: other whitespace keeps 0.99+. Lower it for harsher edits, raise it for near-identical only.
DEFAULT_THRESHOLD = 0.9
#: cosines this close below the threshold count as reaching it: float32 dot products of unit
#: vectors round by about 1e-7 per dimension, so identical inputs score 0.9999998, not 1.0.
ROUNDING = 1e-5


@dataclass
class DuplicateGroup:
    """Rows of one group of near-duplicates, by id, in file order; ``min_similarity`` is the
    lowest cosine among the pairs found in the group."""

    ids: list[Any]
    min_similarity: float
    #: the user's columns kept beside the rows (``zoo embed --keep-columns``): one dict per id
    fields: list[dict[str, Any]] = field(default_factory=list)


def find_duplicates(path: str | os.PathLike[str], threshold: float = DEFAULT_THRESHOLD, *,
                    batch_rows: int = 4096) -> list[DuplicateGroup]:
    """The groups of near-duplicate rows of ``path`` (an embedding file ``zoo embed`` wrote):
    rows whose cosine reaches ``threshold`` within float rounding (:data:`ROUNDING`), so that
    ``threshold=1.0`` groups identical inputs."""
    import numpy as np

    if not 0 < threshold <= 1:
        raise ValueError(f"threshold is a cosine similarity in (0, 1], not {threshold!r}")
    faiss = faiss_module()
    provenance = comparable_provenance(path)
    require_dense(path, provenance, "zoo dedup")
    index = faiss.IndexFlatIP(int(provenance["embed_dim"]))
    ids: list[Any] = []
    columns: dict[str, list[Any]] = {}
    for batch in embedding_batches(path, batch_rows):
        index.add(unit_rows(batch.rows))
        ids += batch.ids
        for name, values in batch.columns.items():
            columns.setdefault(name, []).extend(values)
    parent = list(range(len(ids)))
    lowest: dict[int, float] = {}
    start = 0
    for batch in embedding_batches(path, batch_rows):
        limits, scores, found = index.range_search(unit_rows(batch.rows), threshold - ROUNDING)
        for q in range(len(batch.rows)):
            for score, j in zip(scores[limits[q]:limits[q + 1]], found[limits[q]:limits[q + 1]]):
                if j != start + q:
                    _join(parent, start + q, int(j), float(score), lowest)
        start += len(batch.rows)
    groups: dict[int, list[int]] = {}
    for i in range(len(ids)):
        groups.setdefault(_root(parent, i), []).append(i)
    return [DuplicateGroup([ids[i] for i in members], float(np.float32(lowest[root])),
                           [{name: values[i] for name, values in columns.items()} for i in members] if columns else [])
            for root, members in groups.items() if len(members) > 1]


def _root(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _join(parent: list[int], a: int, b: int, score: float, lowest: dict[int, float]) -> None:
    ra, rb = _root(parent, a), _root(parent, b)
    low = min(score, lowest.get(ra, 1.0), lowest.get(rb, 1.0))
    if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)
    lowest[min(ra, rb)] = low
