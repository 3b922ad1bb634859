"""Nearest-neighbour search over the embedding files ``zoo embed`` writes: dense rows with FAISS,
a plugin's rows with its row format's store (:class:`~zoo.core._rows.RowStore`).

>>> from zoo import search
>>> index = search.build("photos.parquet", "photos.idx")         # exact cosine similarity
>>> index.search(["a dog on a beach"], k=5)                       # embedded with the index's model
>>> search.open_index("photos.idx").add("more-photos.parquet")   # rows already held are skipped

An index is a folder: ``index.faiss`` (the vectors; a row format's own files for its rows),
``rows.parquet`` (each row's id, input content hash, source file and the columns ``zoo embed
--keep-columns`` kept, as ``column:NAME``) and ``zoo-index.json`` (the provenance of the
embeddings, the index type, the metric, the row count and the sha256 of the other files, sealed by
a digest of its own content). Opening an index checks all of it, so a file replaced, edited or cut
short outside zoo is refused by name rather than answering with wrong neighbours. Dense scores are
cosine similarities whether or not the model normalises its rows (rows and queries are stored and
compared at unit length), as ``zoo dedup`` reports them; a row format says what its scores are
(sparse term weights: dot products, as sentence-transformers' ``SparseEncoder`` scores them).
Every embedding that meets the index (added rows, queries) must come from the same model, kind,
revision, weights, pooling, normalisation and layers, or
:class:`~zoo.errors.ProvenanceMismatchError` names both sides.

Index types for dense rows: ``flat`` (exact; the default) and ``hnsw`` (approximate, for
millions of rows: FAISS's HNSW graph, ``M`` links per node, searched with ``ef_search``
candidates). Needs the ``search`` extra (``pip install 'zoo-models[search]'``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.catalog._kinds import wrong_kind
from zoo.catalog._loader import load
from zoo.catalog._registry import get_registry
from zoo.core._embed_options import embedded_as, recorded_settings
from zoo.core._rows import DenseRows, FaissStore, RowFormat, RowStore
from zoo.core._rows import faiss_module as faiss_module  # re-exported: zoo.search.faiss_module, as before
from zoo.embeddings._embedding_file import comparable_provenance, embedding_batches, kept_columns, row_format_of
from zoo.store._atomic import atomic_path, write_json_atomic
from zoo.store._integrity import sha256_file
from zoo.store._provenance import weights_provenance

from .errors import ProvenanceMismatchError, UnsupportedOptionError, ZooError

if TYPE_CHECKING:
    import numpy as np

    from zoo.core._model import Model

ROWS_FILE, META_FILE = "rows.parquet", "zoo-index.json"
KINDS = DenseRows.index_types  # the index types of dense rows
INDEX_FILE = FaissStore.FILE  # where dense rows are; a plugin's row format names its own files
#: what makes two embeddings comparable; a prompt is left out (queries and passages differ by design)
GUARDED = ("model", "revision", "sha256", "kind", "pool", "normalize", "embed_dim", "layers", "layer_merge",
           "truncate_dim", "role", "tower_settings")


@dataclass
class Hit:
    """One neighbour: its id, its score (the cosine similarity, or a reranker's score), the
    embedding file it came from, the user's columns kept beside its row (``zoo embed
    --keep-columns``) and, after reranking, the cosine it was retrieved with."""

    id: str
    score: float
    source: str
    fields: dict[str, Any] = field(default_factory=dict)
    retrieval_score: float | None = None


@dataclass
class Index:
    """An index over zoo embeddings with their provenance; see the module. Its rows are held and
    searched by the :class:`~zoo.core._rows.RowStore` of their row format (FAISS for dense rows)."""

    path: Path
    store: RowStore = field(repr=False)
    provenance: dict[str, Any]
    kind: str  # the index type: flat, hnsw, or one a row format builds
    ids: list[str] = field(default_factory=list, repr=False)
    hashes: list[str | None] = field(default_factory=list, repr=False)
    sources: list[str] = field(default_factory=list, repr=False)
    #: the user's columns kept beside the rows, by name (None where a row's file did not keep it)
    columns: dict[str, list[Any]] = field(default_factory=dict, repr=False)
    #: each kept column's arrow type, which every file added must share
    column_types: dict[str, Any] = field(default_factory=dict, repr=False)
    _model: Model | None = field(default=None, repr=False)
    #: after :meth:`add`: ``(id, held id)`` of each row left out because another id holds its content
    same_content: list[tuple[str, str]] = field(default_factory=list, repr=False)
    #: the index type's settings (HNSW's ``m``, ``ef_construction``, ``ef_search``)
    options: dict[str, Any] = field(default_factory=dict)
    #: what a score is: ``cosine`` (dense rows, stored and compared at unit length), or the row
    #: format's (``dot`` for sparse term weights)
    metric: str = "cosine"

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def faiss_index(self) -> Any:
        """The FAISS index holding dense rows (what this attribute held before row formats)."""
        if not isinstance(self.store, FaissStore):
            raise AttributeError(f"the index {self.path} holds {self.provenance.get('kind')} rows in its own store, "
                                 "not FAISS: use index.store")
        return self.store.raw

    def add(self, parquet: str | os.PathLike[str], *, save: bool = True) -> int:
        """Add the rows of another embedding file from the same model; rows whose input is
        already held (same content hash) are skipped. Returns how many were added. A file with a
        NaN or infinite row is refused whole, by id, before anything is added: such a row would
        never be found, and would make every score it takes part in meaningless."""

        provenance = comparable_provenance(parquet)
        check_same(self.provenance, provenance, f"{parquet}", f"the index {self.path}")
        if _bits(provenance) != _bits(self.provenance):  # ±1 rows score on another scale than values
            raise ProvenanceMismatchError(
                f"{parquet} holds {provenance.get('precision', 'float32')} rows and the index {self.path} "
                f"{self.provenance.get('precision') or 'float32'} ones: binary and non-binary rows score on different "
                "scales; index them apart")
        self._check_column_types(parquet)
        _refuse_non_finite(parquet, row_format_of(provenance))
        held = {h: i for i, h in zip(self.ids, self.hashes) if h}
        self.same_content = []
        added = 0
        for batch in embedding_batches(parquet):
            ids, rows, hashes = batch.ids, batch.rows, batch.hashes
            keep = []
            for i, h in enumerate(hashes):  # in order: a repeated input within the file is held once too
                if h is None or h not in held:
                    keep.append(i)
                    if h:
                        held[h] = str(ids[i])
                elif held[h] != str(ids[i]):
                    self.same_content.append((str(ids[i]), held[h]))
            if keep:
                self.store.add(rows[keep])
                self.ids += [str(ids[i]) for i in keep]
                self.hashes += [hashes[i] for i in keep]
                self.sources += [Path(parquet).name] * len(keep)
                self._add_columns(batch.columns, keep)
                added += len(keep)
        if save:
            self.save()
        return added

    def _check_column_types(self, parquet: str | os.PathLike[str]) -> None:
        """Refuse, before anything is added, a file whose kept column has another type than the
        index's column of that name (a null column takes any)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pq.read_schema(parquet)
        for name in kept_columns(schema.names, self.provenance):
            held, new = self.column_types.get(name), schema.field(name).type
            if held is not None and not pa.types.is_null(held) and not pa.types.is_null(new) and held != new:
                raise ZooError(f"{parquet}'s column {name!r} is {new}, the index {self.path} holds it as {held}; "
                               "keep each column with one type in every embedding file of one index")
            if held is None or pa.types.is_null(held):
                self.column_types[name] = new

    def _add_columns(self, columns: dict[str, list[Any]], keep: list[int]) -> None:
        """The kept columns of the rows added (positions ``keep`` of a batch); a column one file
        has and another has not is None where it is missing."""
        before = len(self.ids) - len(keep)
        for name in columns:  # in the file's order, so output shows them as the user kept them
            self.columns.setdefault(name, [None] * before)
        for name, values in self.columns.items():
            values += [columns[name][i] for i in keep] if name in columns else [None] * len(keep)

    def search_vectors(self, vectors: Any, k: int = 10) -> list[list[Hit]]:
        """The ``k`` nearest rows of each query row, best first (fewer if the index is smaller):
        ``(Q, D)`` vectors for dense rows, the row format's rows otherwise (a sparse matrix, a
        list of token matrices)."""
        import numpy as np

        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, not {k!r}")
        if isinstance(self.store, FaissStore) and isinstance(vectors, (list, np.ndarray)):
            vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if not len(self):
            return [[] for _ in range(vectors.shape[0] if hasattr(vectors, "shape") else len(vectors))]
        scores, rows = self.store.search(vectors, min(k, len(self)))
        return [[Hit(self.ids[r], float(s), self.sources[r], {k: v[r] for k, v in self.columns.items()})
                 for s, r in zip(srow, rrow) if r >= 0]
                for srow, rrow in zip(scores, rows)]

    def search(self, queries: list[Any], k: int = 10, *, model: Model | None = None, prompt: str | None = None,
               prompt_text: str | None = None, rerank: Model | None = None, candidates: int = 100,
               rerank_column: str = "text") -> list[list[Hit]]:
        """Embed each query (a text, or an image / audio file path) with the index's model, or
        with ``model`` if it has the same provenance, and return its ``k`` nearest rows. A text
        query takes ``prompt`` (a name the model declares, e.g. ``"query"``) or ``prompt_text``
        (the text itself, e.g. ``"query: "``), as retrieval models ask of their queries.

        With ``rerank`` (a model of kind ``reranker``), the ``candidates`` nearest rows are scored
        against the query by the reranker, from the text each row kept in ``rerank_column`` (``zoo
        embed --keep-columns``), and the best ``k`` returned by its score; each hit keeps the
        cosine it was retrieved with as ``retrieval_score``."""
        if rerank is not None:
            check_reranker(rerank, candidates, rerank_column, self)
        model = self._query_model(model)
        vectors = embed_queries(model, queries, self.provenance, prompt=prompt, prompt_text=prompt_text)
        if rerank is None:
            return self.search_vectors(vectors, k)
        found = self.search_vectors(vectors, max(k, candidates))
        return [rerank_hits(rerank, query, hits, rerank_column, k) for query, hits in zip(queries, found)]

    def _query_model(self, model: Model | None) -> Model:
        if model is None:
            if self._model is None:
                self._model = load(self.provenance["model"])
            model = self._model
        # The query is computed with the index's pooling, normalisation, layers and truncation;
        # what must match is the model itself, then that it pools as the index's rows were.
        what, against = f"the query model {model.name}", f"the index {self.path}"
        check_same(self.provenance, {**self.provenance, **weights_provenance(model.spec, model.files)}, what, against)
        pool = model.tower()[1].resolve_pool(self.provenance.get("pool"))
        check_same(self.provenance, {**self.provenance, "pool": pool}, what, against)
        return model

    def save(self) -> None:
        """Write the index's three files; the metadata last, with the count the others must have."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path.mkdir(parents=True, exist_ok=True)
        kept = {f"column:{k}": pa.array(v, type=self.column_types.get(k)) for k, v in self.columns.items()}
        rows = pa.table({"id": self.ids, "content_sha256": pa.array(self.hashes, pa.string()), "source": self.sources,
                         **kept})
        written = self.store.write(self.path)
        with atomic_path(self.path / ROWS_FILE) as tmp:
            pq.write_table(rows, tmp)
        meta = {"provenance": self.provenance, "kind": self.kind, "metric": self.metric, "rows": len(self),
                "dim": self.store.width, "options": self.options,
                "sha256": {name: sha256_file(self.path / name) for name in (*written, ROWS_FILE)}}
        write_json_atomic(self.path / META_FILE, {**meta, "seal": _seal(meta)})


def _bits(provenance: dict[str, Any]) -> bool:
    """Whether an embedding file's rows are bits (read back as ±1), not values."""
    return provenance.get("precision") in ("binary", "ubinary")


def _refuse_non_finite(parquet: str | os.PathLike[str], row_format: RowFormat) -> None:
    """A file with NaN or infinite rows, named by id, before anything of it is added."""
    bad = [i for batch in embedding_batches(parquet) for i, ok in zip(batch.ids, row_format.finite(batch.rows))
           if not ok]
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ZooError(f"{parquet}: {len(bad)} row{'s' if len(bad) != 1 else ''} hold NaN or infinite values "
                       f"(id {shown}); nothing was added: re-embed those inputs or leave them out")


def build(parquet: str | os.PathLike[str], output: str | os.PathLike[str], *, kind: str | None = None,
          m: int | None = None, ef_construction: int | None = None, ef_search: int | None = None) -> Index:
    """A new index at ``output`` (a folder) over an embedding file's rows; see the module.
    ``kind`` is the index type: for dense rows ``flat`` (the default) or ``hnsw`` (with ``m``,
    ``ef_construction`` and ``ef_search``: 32, 80 and 64 unless given); a plugin's row format names
    its own, and a setting its type does not take is refused by name."""
    provenance = comparable_provenance(parquet)
    row_format = row_format_of(provenance)
    index_type = row_format.check_index_type(kind)
    options = row_format.index_options(index_type, {
        name: value for name, value in (("m", m), ("ef_construction", ef_construction), ("ef_search", ef_search))
        if value is not None})
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists; choose a new folder, or add rows to an index with Index.add")
    store = row_format.new_store(int(provenance["embed_dim"]), index_type, options)
    index = Index(out, store, {k: provenance.get(k) for k in (*GUARDED, "backend", "modality", "zoo_version",
                                                              "precision")}, index_type,
                  options=options, metric=row_format.metric)
    index.add(parquet)
    return index


def nearest_rows(rows: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``min(k, len(rows))`` nearest rows by cosine similarity, best first, as two
    ``(len(queries), min(k, len(rows)))`` arrays of scores and row positions: the flat index that
    :func:`build` makes, held in memory for one batch of queries (hard-negative mining)."""
    store = FaissStore.new(rows.shape[1], "flat", {})
    store.add(rows)
    return store.search(queries, min(k, len(rows)))


def open_index(path: str | os.PathLike[str]) -> Index:
    """An index ``build`` wrote, checked whole: its metadata's seal, each file's sha256 and the
    row counts; anything changed outside zoo is a :class:`~zoo.errors.ZooError` naming the file."""
    import pyarrow.parquet as pq

    folder = Path(path)
    meta = _read_meta(folder)
    for name, digest in meta["sha256"].items():
        if not (folder / name).is_file():
            raise ZooError(f"{folder / name} is missing; rebuild the index with `zoo index EMB.parquet -o {folder}`")
        if sha256_file(folder / name) != digest:
            raise ZooError(f"{folder / name} is not the file zoo wrote (its sha256 differs from the one "
                           f"{META_FILE} records): it was changed or replaced; rebuild the index with `zoo index`")
    row_format = row_format_of(meta["provenance"])
    if meta["metric"] != row_format.metric:
        raise ZooError(f"{folder} records {meta['metric']!r} scores, and its rows' format scores by "
                       f"{row_format.metric!r}: it was written by another version of the plugin that reads its "
                       "rows; rebuild it with `zoo index`")
    try:
        store = row_format.open_store(folder, meta)
        rows = pq.read_table(folder / ROWS_FILE)
    except (OSError, ValueError) as exc:  # arrow's ArrowInvalid is a ValueError
        raise ZooError(f"{folder} holds a file zoo cannot read ({type(exc).__name__}: {exc}); rebuild the index "
                       "with `zoo index`") from None
    if not len(store) == rows.num_rows == meta["rows"]:
        raise ZooError(f"{folder} is inconsistent ({len(store)} vectors, {rows.num_rows} rows, {meta['rows']} "
                       "recorded): an update was interrupted; rebuild it with `zoo index`")
    kept = [name for name in rows.column_names if name.startswith("column:")]
    columns = {name.removeprefix("column:"): rows.column(name).to_pylist() for name in kept}
    types = {name.removeprefix("column:"): rows.schema.field(name).type for name in kept}
    return Index(folder, store, meta["provenance"], meta["kind"], rows.column("id").to_pylist(),
                 rows.column("content_sha256").to_pylist(), rows.column("source").to_pylist(), columns, types,
                 options=meta.get("options") or {}, metric=meta["metric"])


def _seal(meta: dict[str, Any]) -> str:
    """A digest of the metadata's content: an edit by hand (a pooling, a row count) breaks it."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()


def _read_meta(folder: Path) -> dict[str, Any]:
    """``zoo-index.json``, checked against its seal."""
    path = folder / META_FILE
    if not path.is_file():
        raise ZooError(f"{folder} is not a zoo index (no {META_FILE}); build one with "
                       f"`zoo index EMB.parquet -o {folder}`")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ZooError(f"{path} is not valid JSON ({exc}); rebuild the index with `zoo index`") from None
    seal = meta.pop("seal", None) if isinstance(meta, dict) else None
    if seal is None and isinstance(meta, dict) and "sha256" not in meta:
        raise ZooError(f"{folder} was written by an earlier zoo, which recorded no digests of its files: rebuild "
                       "it with `zoo index`")
    if seal is None or seal != _seal(meta):
        raise ZooError(f"{path} was edited after zoo wrote it (its seal does not match its content): its settings "
                       "cannot be trusted to describe the vectors; rebuild the index with `zoo index`")
    return meta


def check_reranker(reranker: Model, candidates: int, column: str, index: Index) -> None:
    """Before anything runs: a reranker, a positive number of candidates, and a kept text column."""
    if reranker.kind != "reranker":
        raise wrong_kind(reranker.name, reranker.kind, "reranker")
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ValueError(f"candidates must be a positive integer, not {candidates!r}")
    if column not in index.columns:
        kept = ", ".join(index.columns) or "none"
        raise ZooError(f"the index {index.path} keeps no {column!r} column to rerank its rows by (it keeps: {kept}); "
                       f"embed with zoo embed --keep-columns {column} (a text file keeps text, its lines), or name "
                       "the column that holds each row's text with --rerank-column")


def rerank_hits(reranker: Model, query: Any, hits: list[Hit], column: str, k: int) -> list[Hit]:
    """``hits`` ordered by ``reranker``'s score of (query, the text each kept in ``column``), best ``k``."""
    missing = [hit.id for hit in hits if not isinstance(hit.fields.get(column), str)]
    if missing:
        raise ZooError(f"row {missing[0]!r} has no text in column {column!r} to rerank by (its embedding file "
                       f"{next(h.source for h in hits if h.id == missing[0])} did not keep it); re-embed that file "
                       f"with --keep-columns {column}")
    ranked = reranker.rerank(query, [hit.fields[column] for hit in hits], top_k=k)
    return [dataclasses.replace(hits[r.index], score=r.score, retrieval_score=hits[r.index].score) for r in ranked]


def embed_queries(model: Model, queries: list[Any], provenance: dict[str, Any], *, prompt: str | None = None,
                  prompt_text: str | None = None) -> Any:
    """Query rows computed as the index's rows were (pooling, normalisation, layers, truncation),
    each query through the tower of its kind: a file through the tower of its modality, anything
    else through the text tower (an image-text index searched by text), texts with the prompt
    asked for (by name or as text; otherwise the model's default prompt, as for any text). A model
    that runs queries differently from documents (a ColBERT) embeds them in the query role."""
    import numpy as np

    if isinstance(queries, (str, bytes)) or not queries:
        raise ValueError("queries must be a non-empty list of texts or file paths")
    kinds = _query_towers(model, queries)
    if (prompt is not None or prompt_text is not None) and "text" not in kinds:
        raise UnsupportedOptionError(f"a prompt applies to text queries; none of these queries is a text for "
                                     f"{model.name} (they are {' and '.join(sorted(set(kinds)))} files)")
    recorded = {**recorded_settings(provenance), "role": _query_role(model, provenance)}

    def rows_of(kind: str, items: list[Any]) -> Any:
        # the index's rows came through the primary tower: its pooling applies there only
        settings = recorded if kind == model.tower()[0] else {**recorded, "pool": None}
        if kind == "text":
            settings = {**settings, "prompt": prompt, "prompt_text": prompt_text}
        return model.featurize(items, options=model.embed_options(tower=kind, **settings), progress=False)

    if len(set(kinds)) == 1:  # one tower: its rows as they come (a plugin's kind: its own rows)
        return rows_of(kinds[0], queries)
    out = np.empty((len(queries), int(provenance["embed_dim"])), dtype=np.float32)
    for kind in dict.fromkeys(kinds):
        chosen = [i for i, k in enumerate(kinds) if k == kind]
        out[chosen] = rows_of(kind, [queries[i] for i in chosen])
    return out


def _query_role(model: Model, provenance: dict[str, Any]) -> str | None:
    """The role queries take: ``query`` against rows embedded as documents, or for a model that
    runs the roles apart (whose rows must then be documents); else none."""
    role = provenance.get("role")
    if model.search_role("query") is not None and role != "document":
        raise ZooError(f"the index's rows were embedded {embedded_as(role)}, but "
                       f"{model.name} embeds queries and documents differently and searches documents: embed the "
                       "corpus with zoo embed (its default) or --role document")
    return "query" if role == "document" or model.search_role("query") else None


def _query_towers(model: Model, queries: list[Any]) -> list[str]:
    """The tower each query goes through. A model with only a text tower searched with a media
    file's path warns (the path is embedded as text); a query that is not a file, for a model with
    no text tower, is an error naming it."""
    import warnings

    registry = get_registry()
    media = {kind: registry.modality(kind).suffixes for kind in model.towers if kind != "text"}
    kinds = []
    for i, query in enumerate(queries):
        if not isinstance(query, str):  # an image, a waveform...: the primary tower decodes it
            kinds.append(model.tower()[0])
            continue
        is_file = os.path.isfile(query)
        suffix = Path(query).suffix.lower() if is_file else ""
        if is_file and media:
            kinds.append(next((k for k, suffixes in media.items() if suffix in suffixes), next(iter(media))))
        elif "text" in model.towers:
            if is_file and suffix in registry.media_suffixes():
                warnings.warn(f"query {i} ({query!r}) names a media file, but {model.name} embeds texts: the path "
                              "is searched as text; index the files with a model of their modality", UserWarning,
                              stacklevel=3)
            kinds.append("text")
        else:
            raise ValueError(f"query {i} ({str(query)[:60]!r}) is not a file, but {model.name} embeds "
                             f"{' and '.join(model.towers)} inputs: query it with files of that kind, or build the "
                             "index with an image-text model to search images by text")
    return kinds


def check_same(expected: dict[str, Any], got: dict[str, Any], what: str, against: str) -> None:
    """Refuse embeddings whose provenance differs from ``expected`` in a :data:`GUARDED` field."""
    differ = [k for k in GUARDED if _norm(expected.get(k)) != _norm(got.get(k))]
    if differ:
        detail = "; ".join(f"{k}: {got.get(k)!r} vs {expected.get(k)!r}" for k in differ)
        raise ProvenanceMismatchError(f"{what} was embedded differently from {against} ({detail}); "
                                      f"embed with {expected.get('model')} and the same settings, or build a new index")


def _norm(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
