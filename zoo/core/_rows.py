"""Row formats: what one kind of model's featurize gives, how ``zoo embed`` writes it and how
``zoo index`` / ``zoo search`` search it.

A model kind that gives rows (:func:`zoo.hookspecs.zoo_register_kinds`) names a :class:`RowFormat`.
Everything around the rows stays zoo's and is the same for every format: decoding, batching,
``on_error`` bookkeeping, progress, resumable chunks, ids, content hashes, kept columns, provenance
and its guard, the index's seal and sha256 checks. The format supplies only what differs:

- :class:`RowBuffer`: one featurize call's rows, filled batch by batch, handed back in input order;
- the parquet columns a row is written as, and how a table's rows read back;
- :class:`RowStore`: an index's rows and their search.

The embedder's ``(N, D)`` float32 rows are zoo's own format (:class:`DenseRows`, searched with
FAISS); a plugin brings another (sparse term weights, one matrix per item) as its own subclass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from zoo.errors import UnsupportedOptionError, ZooError, did_you_mean
from zoo.store._atomic import atomic_path

from ._quantize import dequantize, output_dtype

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import torch

    from ._embed_options import EmbedOptions
    from ._encoder import Encoder

ReturnTensors = Literal["np", "pt"]


class RowBuffer(ABC):
    """The rows of one featurize call, filled batch by batch in the order batches run."""

    @abstractmethod
    def put(self, positions: list[int], batch: Any, weights: Sequence[float | None]) -> np.ndarray:
        """Hold one batch's model output: row ``j`` of ``batch`` belongs to input ``positions[j]``
        (a ``(B, D)`` tensor, or what the kind's encoder gives: one tensor per input for token
        matrices).

        ``weights[j]`` is None for a whole input, or the weight of a window of a long one (its
        rows are averaged with these weights). Returns a boolean mask over ``positions``: False
        where the row is not finite (NaN or infinity), which the engine reports as that input's
        error; those rows need not be held.
        """

    @abstractmethod
    def result(self, kept: np.ndarray, return_tensors: ReturnTensors) -> Any:
        """The rows of the inputs where the boolean mask ``kept`` is True, in input order."""


class RowStore(ABC):
    """The searchable rows of an index; the :class:`zoo.search.Index` around it holds ids, kept
    columns and provenance, and checks the files :meth:`write` names."""

    @abstractmethod
    def __len__(self) -> int:
        """Rows held."""

    @property
    @abstractmethod
    def width(self) -> int:
        """The width of a row (the model's ``embed_dim``)."""

    @abstractmethod
    def add(self, rows: Any) -> None:
        """Append rows (as :meth:`RowFormat.read` gives them)."""

    @abstractmethod
    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows of each query, best first: ``(scores, positions)``, each
        ``(len(queries), k)``; a position of -1 marks no row (fewer than ``k`` held)."""

    @abstractmethod
    def write(self, folder: Path) -> list[str]:
        """Write the rows into ``folder`` (atomically, file by file); returns the file names, whose
        sha256 the index records and checks on opening."""


class RowFormat(ABC):
    """How one kind of model's rows are held, written and searched. Subclasses are stateless."""

    #: what the rows are, plural, in a sentence's words (``"dense vectors"``)
    description: ClassVar[str] = ""
    #: the parquet columns ``zoo embed`` writes the rows as, in order
    columns: ClassVar[tuple[str, ...]] = ()
    #: the output files ``zoo embed`` writes this format to
    suffixes: ClassVar[tuple[str, ...]] = (".parquet",)
    #: the featurize settings the format's rows take beyond ``tower`` and the prompt (None: all)
    settings: ClassVar[frozenset[str] | None] = frozenset()
    #: the index types ``zoo index --kind`` builds over these rows, the default first
    index_types: ClassVar[tuple[str, ...]] = ()
    #: what a search score is (``"cosine"``, ``"dot"``)
    metric: ClassVar[str] = ""
    #: rows read from an embedding file at a time (fewer for rows as large as a matrix each)
    read_rows: ClassVar[int] = 65_536

    @abstractmethod
    def buffer(self, size: int, options: EmbedOptions) -> RowBuffer:
        """An empty buffer for the rows of ``size`` inputs, made as ``options`` say."""

    @abstractmethod
    def fields(self, width: int, precision: str = "float32") -> list[pa.Field]:
        """The parquet fields of :attr:`columns` for rows of ``width`` (``precision`` is the
        embedder's quantization; other formats are float32, their settings refuse the others)."""

    @abstractmethod
    def to_arrow(self, rows: Any, fields: Sequence[pa.Field]) -> list[pa.Array]:
        """``rows`` (a :meth:`RowBuffer.result`) as one array per field of :meth:`fields`."""

    @abstractmethod
    def read(self, table: pa.Table, provenance: dict[str, Any]) -> Any:
        """The rows of a table of :meth:`fields` (a file ``zoo embed`` wrote, with its provenance)."""

    @abstractmethod
    def finite(self, rows: Any) -> np.ndarray:
        """A boolean mask of the rows that hold only finite values."""

    def metadata(self, encoder: Encoder) -> dict[str, str]:
        """Entries for an embedding file's metadata beyond its provenance (a vocabulary); none by
        default. Keys are prefixed with ``zoo.`` in the file."""
        return {}

    @abstractmethod
    def new_store(self, width: int, index_type: str, options: dict[str, Any]) -> RowStore:
        """An empty store of ``index_type`` (one of :attr:`index_types`) for rows of ``width``;
        ``options`` are the index type's settings (HNSW's ``m``...), recorded in the index."""

    @abstractmethod
    def open_store(self, folder: Path, meta: dict[str, Any]) -> RowStore:
        """The store :meth:`RowStore.write` wrote into ``folder``; ``meta`` is the index's checked
        metadata (``kind``: the index type, ``options``, ``dim``)."""

    # -- comparing rows (the conformance kit's checks); the defaults serve arrays -----------------

    def count(self, rows: Any) -> int:
        """How many inputs ``rows`` holds."""
        return int(rows.shape[0])

    def take(self, rows: Any, positions: Sequence[int]) -> Any:
        """The rows at ``positions``, in that order."""
        return rows[list(positions)]

    def max_difference(self, a: Any, b: Any) -> float:
        """The largest absolute difference between two sets of rows (infinity where their shapes
        differ): what "the same rows" is measured by."""
        import numpy as np

        if a.shape != b.shape:
            return float("inf")
        return float(np.abs(np.asarray(a) - np.asarray(b)).max()) if a.size else 0.0

    def check_index_type(self, index_type: str | None) -> str:
        """``index_type`` if this format builds it (None: the default)."""
        if index_type is None:
            return self.index_types[0]
        if index_type not in self.index_types:
            raise ValueError(f"index type {index_type!r} does not hold {self.description}"
                             f"{did_you_mean(index_type, self.index_types)}; choose {', '.join(self.index_types)}")
        return index_type

    def index_options(self, index_type: str, asked: dict[str, Any]) -> dict[str, Any]:
        """The settings of an index of ``index_type`` (recorded in it): those ``asked`` (given,
        not None) over the type's defaults. The default takes none: one asked is refused by name."""
        if asked:
            raise ValueError(f"{', '.join(asked)} {'is a setting' if len(asked) == 1 else 'are settings'} of hnsw "
                             f"indexes; a {index_type} index takes none")
        return {}

    def check_settings(self, model: str, asked: dict[str, Any]) -> None:
        """Refuse by name a featurize setting these rows do not take."""
        if self.settings is None:
            return
        extra = sorted(name for name, value in asked.items() if value is not None and name not in self.settings)
        if extra:
            raise UnsupportedOptionError(f"{model} gives {self.description}, which take no {extra[0]}= setting "
                                         f"(they take: {', '.join(sorted(self.settings)) or 'tower and prompt only'})")


# -- the embedder's rows: (N, D) float32 --------------------------------------------------------


class DenseBuffer(RowBuffer):
    """``(N, dim)`` float32 rows; a windowed input's rows are summed with their weights as they
    come and divided at the end."""

    def __init__(self, size: int, dim: int, keep_dims: int | None = None, normalize: bool = False) -> None:
        import numpy as np

        self.dim, self.keep_dims, self.normalize = dim, keep_dims, normalize
        self.rows = np.zeros((size, keep_dims or dim), dtype=np.float32)
        self.weight = np.zeros(size, dtype=np.float64)  # summed window weights; 0 for whole inputs

    def put(self, positions: list[int], batch: torch.Tensor, weights: Sequence[float | None]) -> np.ndarray:
        import numpy as np
        import torch

        n = len(positions)
        if tuple(batch.shape) != (n, self.dim):
            raise RuntimeError(f"the encoder returned shape {tuple(batch.shape)} for {n} items; expected "
                               f"({n}, {self.dim})")
        emb = batch.float()  # first: numpy has no bfloat16
        if self.keep_dims:
            emb = emb[:, :self.keep_dims]
        values = emb.cpu().numpy()
        finite = np.isfinite(values).all(axis=1)
        whole = [j for j in range(n) if finite[j] and weights[j] is None]
        if whole:
            kept = emb[whole]
            if self.normalize:
                kept = torch.nn.functional.normalize(kept, p=2, dim=-1)
            self.rows[[positions[j] for j in whole]] = kept.cpu().numpy()
        for j in range(n):
            if finite[j] and weights[j] is not None:
                self.rows[positions[j]] += np.float32(weights[j]) * values[j]
                self.weight[positions[j]] += weights[j]
        return finite

    def result(self, kept: np.ndarray, return_tensors: ReturnTensors) -> Any:
        import numpy as np

        windowed = np.flatnonzero(self.weight > 0)
        if len(windowed):
            self.rows[windowed] /= self.weight[windowed, None].astype(np.float32)
            if self.normalize:
                norms = np.linalg.norm(self.rows[windowed], axis=1, keepdims=True)
                self.rows[windowed] /= np.maximum(norms, 1e-12)
        out = self.rows[kept]
        if return_tensors == "pt":
            import torch

            return torch.from_numpy(out)
        return out


class DenseRows(RowFormat):
    """An embedder's rows: one ``(D,)`` float32 vector per input, written as a fixed-size
    ``embedding`` list column and searched by cosine similarity with FAISS."""

    description = "dense vectors"
    columns = ("embedding",)
    suffixes = (".parquet", ".npy")
    settings = None
    index_types = ("flat", "hnsw")
    metric = "cosine"

    def buffer(self, size: int, options: EmbedOptions) -> RowBuffer:
        return DenseBuffer(size, options.dim, options.truncate_dim, options.normalize)

    def fields(self, width: int, precision: str = "float32") -> list[pa.Field]:
        import pyarrow as pa

        return [pa.field("embedding", pa.list_(pa.from_numpy_dtype(output_dtype(precision)), width))]

    def to_arrow(self, rows: Any, fields: Sequence[pa.Field]) -> list[pa.Array]:
        import pyarrow as pa

        embedding_type = fields[0].type
        flat = pa.array(rows.reshape(-1), type=embedding_type.value_type)
        return [pa.FixedSizeListArray.from_arrays(flat, embedding_type.list_size)]

    def read(self, table: pa.Table, provenance: dict[str, Any]) -> Any:
        rows = embedding_rows(table)
        precision, ranges = provenance.get("precision", "float32"), (provenance.get("calibration") or {}).get("ranges")
        return dequantize(rows, precision, int(provenance["embed_dim"]), ranges)

    def finite(self, rows: Any) -> np.ndarray:
        import numpy as np

        return np.isfinite(rows).all(axis=1)

    def index_options(self, index_type: str, asked: dict[str, Any]) -> dict[str, Any]:
        if index_type == "hnsw":
            return {**FaissStore.HNSW_DEFAULTS, **asked}
        return super().index_options(index_type, asked)

    def new_store(self, width: int, index_type: str, options: dict[str, Any]) -> RowStore:
        return FaissStore.new(width, self.check_index_type(index_type), options)

    def open_store(self, folder: Path, meta: dict[str, Any]) -> RowStore:
        return FaissStore.open(folder)


class FaissStore(RowStore):
    """Unit-length rows in a FAISS inner-product index: exact (``flat``) or HNSW's graph."""

    FILE = "index.faiss"
    #: HNSW's links per node, candidates while building and while searching
    HNSW_DEFAULTS: ClassVar[dict[str, int]] = {"m": 32, "ef_construction": 80, "ef_search": 64}

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    @classmethod
    def new(cls, width: int, index_type: str, options: dict[str, Any]) -> FaissStore:
        faiss = faiss_module()
        if index_type == "flat":
            return cls(faiss.IndexFlatIP(width))
        raw = faiss.IndexHNSWFlat(width, int(options["m"]), faiss.METRIC_INNER_PRODUCT)
        raw.hnsw.efConstruction = int(options["ef_construction"])
        raw.hnsw.efSearch = int(options["ef_search"])
        return cls(raw)

    @classmethod
    def open(cls, folder: Path) -> FaissStore:
        try:
            return cls(faiss_module().read_index(str(folder / cls.FILE)))
        except RuntimeError as exc:  # faiss's error for a file it cannot read
            raise ZooError(f"{folder / cls.FILE} is not readable by FAISS ({exc}); rebuild the index with "
                           "`zoo index`") from None

    def __len__(self) -> int:
        return int(self.raw.ntotal)

    @property
    def width(self) -> int:
        return int(self.raw.d)

    def add(self, rows: Any) -> None:
        self.raw.add(unit_rows(rows))

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.width:
            raise ValueError(f"query vectors have {queries.shape[1]} dimensions; the index holds {self.width}")
        if not np.isfinite(queries).all():
            raise ValueError("a query vector holds NaN or infinite values")
        scores, positions = self.raw.search(unit_rows(queries), k)
        return scores, positions

    def write(self, folder: Path) -> list[str]:
        with atomic_path(folder / self.FILE) as tmp:
            faiss_module().write_index(self.raw, str(tmp))
        return [self.FILE]


def faiss_module() -> Any:
    """FAISS, or an ImportError naming the extra that installs it."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("zoo index and zoo search need FAISS: pip install 'zoo-models[search]'") from exc
    return faiss


def embedding_rows(table: pa.Table) -> np.ndarray:
    """A table's fixed-size ``embedding`` column as an ``(N, D)`` array."""
    column = table.column("embedding").combine_chunks()
    return column.values.to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)


def unit_rows(rows: Any) -> np.ndarray:
    """``rows`` as contiguous float32 of length 1, so that inner products are cosines (a zero row
    stays zero)."""
    import numpy as np

    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
