"""Multi-vector rows: one matrix of token vectors per input (ColBERT-style late interaction),
scored by MaxSim: for each query token its best match among the document's tokens, summed over the
query's tokens, the score sentence-transformers' ``MultiVectorEncoder.similarity`` gives.

featurize gives :class:`TokenMatrices`, a sequence of ``(tokens_i, dim)`` float32 arrays held as
one flat array of every token vector and the offsets where each input's begin. ``zoo embed``
writes them as a ``tokens`` count and an ``embedding`` column of lists of fixed-size vectors;
``zoo index`` keeps them as the same two arrays and searches them with a :class:`MaxSimStore`:

- ``flat``: MaxSim against every document, exact, a block of documents at a time;
- ``hnsw``: each query token's nearest document tokens in a FAISS HNSW graph over every token
  vector name the candidate documents, which are then scored exactly (ColBERT's end-to-end
  retrieval): the scores are exact, and a document none of whose tokens is near any query token
  is missed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from zoo.errors import ZooError
from zoo.store._atomic import atomic_path

from ._rows import FaissStore, ReturnTensors, RowBuffer, RowFormat, RowStore, faiss_module

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from ._embed_options import EmbedOptions

VECTORS_FILE, OFFSETS_FILE, GRAPH_FILE = "token_vectors.npy", "token_offsets.npy", "tokens.faiss"
BLOCK_TOKENS = 1 << 16  # document tokens scored against a query at once (bounds the similarity block)
#: the document tokens each query token fetches from an hnsw index (recorded in its options)
TOKEN_CANDIDATES = 32
#: the score of a document with no token vectors: last, as sentence-transformers' maxsim ranks it
EMPTY_DOCUMENT_SCORE = -1e9


class TokenMatrices(Sequence["np.ndarray"]):
    """The rows of a multi-vector model: ``rows[i]`` is input ``i``'s ``(tokens_i, dim)`` float32
    matrix (a view). ``vectors`` holds every token vector, ``offsets[i]:offsets[i + 1]`` input
    ``i``'s; indexing with a list or slice gives another :class:`TokenMatrices`."""

    def __init__(self, vectors: np.ndarray, offsets: np.ndarray) -> None:
        self.vectors, self.offsets = vectors, offsets

    @classmethod
    def stack(cls, matrices: Sequence[np.ndarray], width: int) -> TokenMatrices:
        """One :class:`TokenMatrices` of ``matrices`` (each ``(tokens, width)``), in order."""
        import numpy as np

        offsets = np.zeros(len(matrices) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(m) for m in matrices])
        vectors = np.concatenate(matrices).astype(np.float32, copy=False) if len(matrices) else \
            np.zeros((0, width), dtype=np.float32)
        return cls(vectors.reshape(-1, width), offsets)

    @property
    def width(self) -> int:
        """The width of a token vector."""
        return int(self.vectors.shape[1])

    @property
    def lengths(self) -> np.ndarray:
        """Each input's token count."""
        import numpy as np

        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice | Sequence[int] | np.ndarray) -> TokenMatrices: ...

    def __getitem__(self, index: Any) -> Any:
        import numpy as np

        if isinstance(index, (int, np.integer)):
            i = range(len(self))[index]  # negative indices, and IndexError past the end
            return self.vectors[self.offsets[i]:self.offsets[i + 1]]
        chosen = np.arange(len(self))[index]  # a slice, list or array; negative indices too
        starts, lengths = self.offsets[chosen], self.offsets[chosen + 1] - self.offsets[chosen]
        offsets = np.zeros(len(chosen) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)
        tokens = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return TokenMatrices(self.vectors[tokens], offsets)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"<TokenMatrices of {len(self)} inputs, {len(self.vectors)} token vectors of width {self.width}>"


class TokenBuffer(RowBuffer):
    """Each input's matrix as its batch gives it (a list of ``(tokens, dim)`` tensors)."""

    def __init__(self, size: int, width: int) -> None:
        self.width = width
        self.held: dict[int, np.ndarray] = {}

    def put(self, positions: list[int], batch: Any, weights: Sequence[float | None]) -> np.ndarray:
        import numpy as np

        if any(w is not None for w in weights):
            raise RuntimeError("token matrices are not averaged over windows: the encoder cut an input into windows")
        finite = np.ones(len(positions), dtype=bool)
        for j, (position, matrix) in enumerate(zip(positions, batch)):
            values = matrix.float().cpu().numpy()
            if values.ndim != 2 or values.shape[1] != self.width:
                raise RuntimeError(f"the encoder returned a matrix of shape {values.shape} for one item; expected "
                                   f"(tokens, {self.width})")
            finite[j] = bool(np.isfinite(values).all())
            if finite[j]:
                self.held[position] = values
        return finite

    def result(self, kept: np.ndarray, return_tensors: ReturnTensors) -> Any:
        import numpy as np

        matrices = [self.held[int(i)] for i in np.flatnonzero(kept)]
        if return_tensors == "pt":
            import torch

            return [torch.from_numpy(m) for m in matrices]
        return TokenMatrices.stack(matrices, self.width)


class MultiVectorRows(RowFormat):
    """A multi-vector model's rows: one ``(tokens, dim)`` float32 matrix per input
    (:class:`TokenMatrices`), written as a ``tokens`` count and an ``embedding`` list of vectors,
    scored by MaxSim."""

    description = "token-vector matrices (one per input, for late interaction)"
    columns = ("tokens", "embedding")
    settings = frozenset()
    index_types = ("flat", "hnsw")
    metric = "maxsim"
    read_rows = 2048  # about 100 MB of token vectors a batch (2048 x 100 tokens x 128 x 4 bytes)

    def buffer(self, size: int, options: EmbedOptions) -> RowBuffer:
        return TokenBuffer(size, options.dim)

    def fields(self, width: int, precision: str = "float32") -> list[pa.Field]:
        import pyarrow as pa

        return [pa.field("tokens", pa.int32()), pa.field("embedding", pa.list_(pa.list_(pa.float32(), width)))]

    def to_arrow(self, rows: Any, fields: Sequence[pa.Field]) -> list[pa.Array]:
        import numpy as np
        import pyarrow as pa

        vectors = pa.FixedSizeListArray.from_arrays(pa.array(rows.vectors.reshape(-1)), rows.width)
        return [pa.array(rows.lengths.astype(np.int32)),
                pa.ListArray.from_arrays(pa.array(rows.offsets.astype(np.int32)), vectors)]

    def read(self, table: pa.Table, provenance: dict[str, Any]) -> TokenMatrices:
        import numpy as np

        column = table.column("embedding").combine_chunks()
        offsets = np.asarray(column.offsets, dtype=np.int64)
        values = column.flatten().flatten().to_numpy(zero_copy_only=False)  # each level's own offsets honoured
        # a copy the store owns (arrow's buffers are read-only, which torch warns about)
        vectors = np.array(values, dtype=np.float32).reshape(-1, int(provenance["embed_dim"]))
        rows = TokenMatrices(vectors, offsets - offsets[0])
        if not np.array_equal(rows.lengths, table.column("tokens").to_numpy()):
            raise ZooError("an embedding file's tokens column does not count its embedding column's vectors on some "
                           "row: it was not written by zoo embed; embed the inputs again")
        return rows

    def finite(self, rows: Any) -> np.ndarray:
        import numpy as np

        bad = np.concatenate([[0], np.cumsum(~np.isfinite(rows.vectors).all(axis=1))])
        return bad[rows.offsets[1:]] == bad[rows.offsets[:-1]]

    def index_options(self, index_type: str, asked: dict[str, Any]) -> dict[str, Any]:
        if index_type == "hnsw":
            return {**FaissStore.HNSW_DEFAULTS, "token_candidates": TOKEN_CANDIDATES, **asked}
        return super().index_options(index_type, asked)

    def new_store(self, width: int, index_type: str, options: dict[str, Any]) -> RowStore:
        return MaxSimStore(width, self.check_index_type(index_type), options)

    def open_store(self, folder: Path, meta: dict[str, Any]) -> RowStore:
        return MaxSimStore.read(folder, meta)

    # the conformance kit compares rows through these
    def count(self, rows: Any) -> int:
        return len(rows)

    def take(self, rows: Any, positions: Sequence[int]) -> Any:
        return rows[list(positions)]

    def max_difference(self, a: Any, b: Any) -> float:
        import numpy as np

        if len(a) != len(b) or not np.array_equal(a.lengths, b.lengths):
            return float("inf")
        return float(np.abs(a.vectors - b.vectors).max()) if len(a.vectors) else 0.0


class MaxSimStore(RowStore):
    """A corpus of token matrices (every token vector in one array, with each document's offsets)
    searched by MaxSim: exactly against every document (``flat``), or against the candidates an
    HNSW graph over the token vectors finds (``hnsw``; see the module)."""

    def __init__(self, width: int, index_type: str, options: dict[str, Any],
                 corpus: TokenMatrices | None = None, graph: Any = None) -> None:
        self._width, self.index_type, self.options = width, index_type, options
        self.parts: list[TokenMatrices] = [corpus] if corpus is not None else []
        self.graph = graph  # the hnsw index over the token vectors added so far

    @classmethod
    def read(cls, folder: Path, meta: dict[str, Any]) -> MaxSimStore:
        import numpy as np

        try:
            corpus = TokenMatrices(np.load(folder / VECTORS_FILE, allow_pickle=False),
                                   np.load(folder / OFFSETS_FILE, allow_pickle=False))
            graph = faiss_module().read_index(str(folder / GRAPH_FILE)) if meta["kind"] == "hnsw" else None
        except (OSError, ValueError, RuntimeError) as exc:
            raise ZooError(f"the token vectors of {folder} are not readable ({exc}); rebuild the index with "
                           "`zoo index`") from None
        return cls(int(meta["dim"]), meta["kind"], dict(meta.get("options") or {}), corpus, graph)

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    @property
    def width(self) -> int:
        return self._width

    def add(self, rows: Any) -> None:
        self.parts.append(rows)

    def corpus(self) -> TokenMatrices:
        """Every document added, as one :class:`TokenMatrices` (joined once per change)."""
        import numpy as np

        if len(self.parts) != 1:
            vectors = np.concatenate([p.vectors for p in self.parts]) if self.parts else \
                np.zeros((0, self._width), dtype=np.float32)
            offsets = np.zeros(len(self) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum(np.concatenate([p.lengths for p in self.parts])) if self.parts else []
            self.parts = [TokenMatrices(vectors, offsets)]
        return self.parts[0]

    def token_graph(self) -> Any:
        """The HNSW graph over every token vector, brought up to date with those added since."""
        corpus = self.corpus()
        if self.graph is None:
            faiss = faiss_module()
            self.graph = faiss.IndexHNSWFlat(self._width, int(self.options["m"]), faiss.METRIC_INNER_PRODUCT)
            self.graph.hnsw.efConstruction = int(self.options["ef_construction"])
        if self.graph.ntotal < len(corpus.vectors):
            self.graph.add(corpus.vectors[self.graph.ntotal:])
        self.graph.hnsw.efSearch = int(self.options["ef_search"])
        return self.graph

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each query's ``k`` best documents by MaxSim, best first, the lower position first among
        equal scores (position -1 where an hnsw search found fewer candidates)."""
        import numpy as np

        queries = _query_matrices(queries, self._width)
        corpus = self.corpus()
        scores = np.zeros((len(queries), k), dtype=np.float32)
        positions = np.full((len(queries), k), -1, dtype=np.int64)
        for row, query in enumerate(queries):
            if self.index_type == "hnsw":
                found = self._candidates(query, corpus)
                found_scores = maxsim(query, corpus[found])
            else:
                found, found_scores = np.arange(len(corpus)), maxsim(query, corpus)
            best = top_k(found_scores, found, k)
            scores[row, :len(best)], positions[row, :len(best)] = found_scores[best], found[best]
        return scores, positions

    def _candidates(self, query: np.ndarray, corpus: TokenMatrices) -> np.ndarray:
        """The documents holding one of each query token's nearest token vectors, in order."""
        import numpy as np

        _, tokens = self.token_graph().search(np.ascontiguousarray(query), int(self.options["token_candidates"]))
        tokens = tokens[tokens >= 0]
        return np.unique(np.searchsorted(corpus.offsets, tokens, side="right") - 1)

    def write(self, folder: Path) -> list[str]:
        import numpy as np

        corpus = self.corpus()
        written = []
        for name, array in ((VECTORS_FILE, corpus.vectors), (OFFSETS_FILE, corpus.offsets)):
            with atomic_path(folder / name) as tmp, open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
            written.append(name)
        if self.index_type == "hnsw":
            with atomic_path(folder / GRAPH_FILE) as tmp:
                faiss_module().write_index(self.token_graph(), str(tmp))
            written.append(GRAPH_FILE)
        return written


def maxsim(query: np.ndarray, documents: TokenMatrices) -> np.ndarray:
    """The MaxSim score of one query matrix against each document: for each query token its
    largest dot product with a token of the document, summed over the query (a document with no
    tokens scores :data:`EMPTY_DOCUMENT_SCORE`, as in sentence-transformers). Documents are scored
    a block of about :data:`BLOCK_TOKENS` tokens at a time, with torch's matrix product and segment
    maximum (about 2.5x numpy's ``reduceat`` here)."""
    import numpy as np
    import torch

    scores = np.full(len(documents), EMPTY_DOCUMENT_SCORE, dtype=np.float32)
    lengths, columns = documents.lengths, torch.from_numpy(np.ascontiguousarray(query)).T
    start = 0
    while start < len(documents):
        stop = max(start + 1, int(np.searchsorted(documents.offsets, documents.offsets[start] + BLOCK_TOKENS,
                                                  side="right")) - 1)
        stop = min(stop, len(documents))
        block = documents.vectors[documents.offsets[start]:documents.offsets[stop]]
        best = torch.segment_reduce(torch.from_numpy(block) @ columns, "max",
                                    lengths=torch.from_numpy(lengths[start:stop]), axis=0)
        held = np.flatnonzero(lengths[start:stop])  # an empty document's maximum is -inf
        scores[start + held] = best[torch.from_numpy(held)].sum(dim=1).numpy()
        start = stop
    return scores


def top_k(scores: np.ndarray, positions: np.ndarray, k: int) -> np.ndarray:
    """Indices into ``scores`` of the ``k`` highest, best first, the lower position first among
    equal scores (so results never depend on how a partition fell)."""
    import numpy as np

    if len(scores) > k:  # keep the k-th score and everything above it, ties at the edge included
        keep = np.flatnonzero(scores >= np.partition(scores, len(scores) - k)[len(scores) - k])
    else:
        keep = np.arange(len(scores))
    return keep[np.lexsort((positions[keep], -scores[keep]))][:k]


def _query_matrices(queries: Any, width: int) -> list[np.ndarray]:
    """Query rows as float32 ``(tokens, width)`` matrices, checked."""
    import numpy as np

    if isinstance(queries, np.ndarray) and queries.ndim == 2:
        raise ValueError("token-vector matrices are searched with a sequence of query matrices (featurize's "
                         "TokenMatrices, or a list of (tokens, dim) arrays); wrap one matrix in a list")
    matrices = [np.ascontiguousarray(q, dtype=np.float32) for q in queries]
    for matrix in matrices:
        if matrix.ndim != 2 or matrix.shape[1] != width:
            raise ValueError(f"a query matrix has shape {matrix.shape}; the index holds token vectors of width {width}")
        if not np.isfinite(matrix).all():
            raise ValueError("a query matrix holds NaN or infinite values")
    return matrices
