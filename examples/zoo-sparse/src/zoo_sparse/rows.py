"""Sparse rows: vocabulary-sized term weights as a SciPy CSR matrix, written to parquet as each row's
``indices`` and ``values``, searched through an inverted index.

The index is the documents' matrix transposed to term-major CSR: row ``t`` of it is term ``t``'s
posting list (the documents that hold the term, with their weights). A query's scores are the
sparse product ``query @ postings``, which SciPy computes by walking only the posting lists of the
query's own terms, the same work a classic inverted index does; the result is the dot product of
query and document, the score sentence-transformers' ``SparseEncoder.similarity`` gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo import RowBuffer, RowFormat, RowStore, ZooError, atomic_path

if TYPE_CHECKING:
    import pyarrow as pa
    import scipy.sparse
    import torch

POSTINGS_FILE = "postings.npz"
QUERY_BLOCK = 256  # queries scored at once


class SparseBuffer(RowBuffer):
    """Each batch's rows as CSR, stacked in input order at the end."""

    def __init__(self, size: int, width: int) -> None:
        self.size, self.width = size, width
        self.parts: list[tuple[list[int], scipy.sparse.csr_array]] = []

    def put(self, positions: list[int], batch: torch.Tensor, weights: Sequence[float | None]) -> np.ndarray:
        import scipy.sparse

        if any(w is not None for w in weights):
            raise RuntimeError("sparse rows are not averaged over windows: the encoder cut an input into windows")
        if tuple(batch.shape) != (len(positions), self.width):
            raise RuntimeError(f"the encoder returned shape {tuple(batch.shape)} for {len(positions)} items; "
                               f"expected ({len(positions)}, {self.width})")
        dense = batch.float().cpu().numpy()
        finite = np.isfinite(dense).all(axis=1)
        keep = np.flatnonzero(finite)
        self.parts.append(([positions[j] for j in keep], scipy.sparse.csr_array(dense[keep])))
        return finite

    def result(self, kept: np.ndarray, return_tensors: str) -> scipy.sparse.csr_array:
        import scipy.sparse

        if return_tensors != "np":
            raise ValueError("sparse rows come back as a SciPy CSR matrix: leave return_tensors='np'")
        held = [p for positions, _ in self.parts for p in positions]
        rows = scipy.sparse.vstack([part for _, part in self.parts], format="csr") if self.parts else \
            scipy.sparse.csr_array((0, self.width), dtype=np.float32)
        where = dict(zip(held, range(len(held))))
        order = [where[i] for i in np.flatnonzero(kept)]
        out = scipy.sparse.csr_array(rows[order] if order else (0, self.width), dtype=np.float32)
        out.sort_indices()
        return out


class SparseRows(RowFormat):
    """A sparse encoder's rows: ``(N, vocabulary)`` float32 CSR, stored as ``indices`` /
    ``values`` list columns (the vocabulary in the file's metadata), scored by dot product."""

    description = "sparse term-weight vectors"
    columns = ("indices", "values")
    settings = frozenset()
    index_types = ("inverted",)
    metric = "dot"

    def buffer(self, size: int, options: Any) -> RowBuffer:
        return SparseBuffer(size, options.dim)

    def fields(self, width: int, precision: str = "float32") -> list[pa.Field]:
        import pyarrow as pa

        return [pa.field("indices", pa.list_(pa.int32())), pa.field("values", pa.list_(pa.float32()))]

    def to_arrow(self, rows: Any, fields: Sequence[pa.Field]) -> list[pa.Array]:
        import pyarrow as pa

        offsets = pa.array(rows.indptr.astype(np.int32))
        return [pa.ListArray.from_arrays(offsets, pa.array(rows.indices.astype(np.int32))),
                pa.ListArray.from_arrays(offsets, pa.array(rows.data.astype(np.float32)))]

    def read(self, table: pa.Table, provenance: dict[str, Any]) -> scipy.sparse.csr_array:
        import scipy.sparse

        indices = table.column("indices").combine_chunks()
        values = table.column("values").combine_chunks()
        offsets = np.asarray(indices.offsets)
        if not np.array_equal(np.diff(offsets), np.diff(np.asarray(values.offsets))):
            raise ZooError("an embedding file's indices and values columns differ in length on some row: it was "
                           "not written by zoo embed; embed the inputs again")
        return scipy.sparse.csr_array((values.flatten().to_numpy(zero_copy_only=False).astype(np.float32),
                                       indices.flatten().to_numpy(zero_copy_only=False), offsets - offsets[0]),
                                      shape=(len(indices), int(provenance["embed_dim"])))

    def finite(self, rows: Any) -> np.ndarray:
        row_of = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
        finite = np.ones(rows.shape[0], dtype=bool)
        finite[row_of[~np.isfinite(rows.data)]] = False
        return finite

    def metadata(self, encoder: Any) -> dict[str, str]:
        import json

        vocabulary = getattr(encoder, "vocabulary", None)  # None: the dimensions are not tokens
        return {"vocabulary": json.dumps(list(vocabulary))} if vocabulary is not None else {}

    def new_store(self, width: int, index_type: str, options: dict[str, Any]) -> RowStore:
        self.check_index_type(index_type)
        return InvertedStore(width)

    def open_store(self, folder: Path, meta: dict[str, Any]) -> RowStore:
        try:
            return InvertedStore.read(folder / POSTINGS_FILE)
        except (OSError, ValueError) as exc:
            raise ZooError(f"{folder / POSTINGS_FILE} is not readable ({exc}); rebuild the index with `zoo index`") \
                from None

    # the conformance kit compares rows through these
    def take(self, rows: Any, positions: Sequence[int]) -> Any:
        return rows[list(positions)] if len(positions) else rows[:0]

    def max_difference(self, a: Any, b: Any) -> float:
        if a.shape != b.shape:
            return float("inf")
        return float(abs(a - b).max()) if a.nnz or b.nnz else 0.0


class InvertedStore(RowStore):
    """A corpus of sparse rows, searched through its term-major postings (see the module).

    Rows are held document-major as they are added; the postings (``(vocabulary, documents)``
    CSR, each row a term's posting list) are built when first searched or written, once per
    change, so adding a large file batch by batch costs one transposition, not one per batch. The
    corpus is held once: as its added rows, or, once built, as its postings alone.
    """

    def __init__(self, width: int, documents: list[Any] | None = None, postings: Any = None) -> None:
        self._width = width
        self.documents = documents or []
        self._postings = postings

    @classmethod
    def read(cls, path: Path) -> InvertedStore:
        import scipy.sparse

        postings = scipy.sparse.csr_array(scipy.sparse.load_npz(path), dtype=np.float32)
        return cls(postings.shape[0], postings=postings)

    def __len__(self) -> int:
        if self._postings is not None:
            return int(self._postings.shape[1])
        return sum(part.shape[0] for part in self.documents)

    @property
    def width(self) -> int:
        return self._width

    def add(self, rows: Any) -> None:
        import scipy.sparse

        if self._postings is not None:  # the corpus so far is held as its postings alone
            self.documents = [scipy.sparse.csr_array(self._postings.T)]
            self._postings = None
        self.documents.append(scipy.sparse.csr_array(rows, dtype=np.float32))

    def postings(self) -> Any:
        """Term ``t``'s posting list is row ``t``: the documents holding the term, with its weights."""
        import scipy.sparse

        if self._postings is None:
            stacked = scipy.sparse.vstack(self.documents, format="csr") if self.documents else \
                scipy.sparse.csr_array((0, self._width), dtype=np.float32)
            self._postings = scipy.sparse.csr_array(stacked.T, dtype=np.float32)  # CSC -> term-major CSR
            self.documents = []
        return self._postings

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each query's ``k`` best documents among those sharing a term with it (position -1 where
        fewer do): a document with no term of the query scores nothing and is no hit."""
        import scipy.sparse

        if not scipy.sparse.issparse(queries):
            raise ValueError("sparse rows are searched with sparse query rows (a SciPy matrix, as featurize "
                             "gives them)")
        if queries.shape[1] != self.width:
            raise ValueError(f"query rows have {queries.shape[1]} terms; the index holds {self.width}")
        queries = scipy.sparse.csr_array(queries, dtype=np.float32)
        if not np.isfinite(queries.data).all():
            raise ValueError("a query row holds NaN or infinite values")
        scores = np.zeros((queries.shape[0], k), dtype=np.float32)
        positions = np.full((queries.shape[0], k), -1, dtype=np.int64)
        postings = self.postings()
        for start in range(0, queries.shape[0], QUERY_BLOCK):  # bounds the (queries, documents) product
            found = queries[start:start + QUERY_BLOCK] @ postings
            for row in range(found.shape[0]):
                span = slice(found.indptr[row], found.indptr[row + 1])
                best = _best(found.data[span], found.indices[span], k)
                scores[start + row, :len(best)] = found.data[span][best]
                positions[start + row, :len(best)] = found.indices[span][best]
        return scores, positions

    def write(self, folder: Path) -> list[str]:
        import scipy.sparse

        with atomic_path(folder / POSTINGS_FILE) as tmp, open(tmp, "wb") as fh:
            scipy.sparse.save_npz(fh, self.postings())
        return [POSTINGS_FILE]


def _best(scores: np.ndarray, documents: np.ndarray, k: int) -> np.ndarray:
    """Indices into ``scores`` of the ``k`` highest, best first, the lower document position first
    among equal scores (so results never depend on how a partition fell)."""
    if len(scores) > k:  # keep the k-th score and everything above it, ties at the edge included
        keep = np.flatnonzero(scores >= np.partition(scores, len(scores) - k)[len(scores) - k])
    else:
        keep = np.arange(len(scores))
    return keep[np.lexsort((documents[keep], -scores[keep]))][:k]
