"""The retrieval task: queries, a corpus and which corpus items answer each query.

Judgements come in one of two forms:

* ``pairs``: a table (or list) of ``(query, positive)`` pairs, as ``finetune`` and
  ``mine-negatives`` read them. The corpus is every distinct positive (plus ``corpus``, extra
  items that answer nothing); a query's relevant items are its positives, all of them where a
  query repeats. Image-caption pairs make a cross-modal task.
* ``queries``, ``corpus`` and ``qrels`` tables in BEIR's layout: ids in ``_id`` (or ``id``),
  texts in ``text``, judgements as ``query-id``, ``corpus-id`` and ``score`` (a score above 0 is
  relevant). A query with no relevant item is left out and counted, as sentence-transformers'
  ``InformationRetrievalEvaluator`` leaves it out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.catalog._registry import get_registry
from zoo.core._embed_options import retrieval_prompts
from zoo.embeddings._inputs import open_inputs
from zoo.embeddings._tables import is_table, iter_rows, table_columns
from zoo.errors import ZooError
from zoo.training._data import content_key, read_pairs

from ._retrieval import Cutoffs, id_ranks, per_query_scores, top_k
from ._task import Embedded, ItemSet, Scored, Task, data_name, is_media

if TYPE_CHECKING:
    import numpy as np

    from zoo.core._model import Model


@dataclass
class Judged:
    """Queries, corpus and the relevant corpus positions of each query."""

    queries: list[Any]
    corpus: list[Any]
    corpus_ids: list[Any]
    relevant: list[set[int]]
    left_out: int = 0
    #: from pairs: where each query and corpus item first appears (corpus items past the pairs: ``extra``)
    query_at: list[int] = field(default_factory=list)
    corpus_at: list[int] = field(default_factory=list)


@dataclass
class Retrieval(Task):
    """Rank the corpus for each query by cosine similarity; see the module for the data."""

    pairs: Any = None
    queries: Any = None
    corpus: Any = None
    qrels: Any = None
    query_column: str = "anchor"
    positive_column: str = "positive"
    corpus_column: str = "text"
    query_prompt: str | None = None
    corpus_prompt: str | None = None
    cutoffs: Cutoffs = field(default_factory=Cutoffs)
    reverse: bool = False

    name: ClassVar[str] = "retrieval"
    primary: ClassVar[str] = "ndcg@10"
    shown: ClassVar[tuple[str, ...]] = ("ndcg@10", "recall@10", "mrr@10", "map@100")

    def __post_init__(self) -> None:
        if (self.pairs is None) == (self.qrels is None):
            raise ZooError("retrieval needs judgements: pairs (a table of query and positive columns), or queries, "
                           "corpus and qrels tables (BEIR's layout)")
        if self.qrels is not None and (self.queries is None or self.corpus is None):
            raise ZooError("qrels name query and corpus ids: give the queries and corpus tables too")
        self._judged: Judged | None = None

    @property
    def judged(self) -> Judged:
        """The data, read on first use."""
        if self._judged is None:
            self._judged = self._read_pairs() if self.pairs is not None else self._read_beir()
        return self._judged

    def item_sets(self) -> list[ItemSet]:
        judged = self.judged
        return [ItemSet("queries", tuple(judged.queries), is_media(judged.queries)),
                ItemSet("corpus", tuple(judged.corpus), is_media(judged.corpus))]

    def prompts(self, model: Model) -> Mapping[str, str | None]:
        query, corpus = retrieval_prompts(model.spec.prompts, self.query_prompt, self.corpus_prompt)
        return {"queries": query, "corpus": corpus}

    def shown_metrics(self) -> tuple[str, ...]:
        return self.shown + (("reverse_ndcg@10", "reverse_recall@10") if self.reverse else ())

    def score(self, model: Model, embedded: Mapping[str, Embedded], seed: int) -> Scored:
        judged = self.judged
        queries, corpus = embedded["queries"].rows, embedded["corpus"].rows
        per_item = _ranked_scores(queries, corpus, judged.relevant, judged.corpus_ids, self.cutoffs)
        if self.reverse:  # each corpus item that answers a query finds its queries (image -> text)
            answering = sorted({doc for rel in judged.relevant for doc in rel})
            found_by = {doc: {q for q, rel in enumerate(judged.relevant) if doc in rel} for doc in answering}
            reverse = _ranked_scores(corpus[answering], queries, [found_by[d] for d in answering],
                                     list(range(len(queries))), self.cutoffs)
            per_item.update({f"reverse_{name}": values for name, values in reverse.items()})
        return Scored({name: float(values.mean()) for name, values in per_item.items()}, len(judged.queries),
                      per_item=per_item)

    def describe(self, seed: int) -> dict[str, Any]:
        judged = self.judged
        data = {"pairs": data_name(self.pairs)} if self.pairs is not None else {
            "queries": data_name(self.queries), "qrels": data_name(self.qrels)}
        if self.corpus is not None:
            data["corpus"] = data_name(self.corpus)
        return {"task": self.name, **data, "queries": len(judged.queries), "corpus_items": len(judged.corpus),
                "judgements": sum(len(r) for r in judged.relevant), "queries_left_out": judged.left_out,
                "reverse": self.reverse, "cutoffs": {k: list(v) for k, v in vars(self.cutoffs).items()},
                "ranking": "cosine similarity, "
                "ties by ascending corpus id (sentence-transformers' InformationRetrievalEvaluator)"}

    def _read_pairs(self) -> Judged:
        given = read_pairs(self.pairs, anchor_column=self.query_column, positive_column=self.positive_column)
        extra = _corpus_items(self.corpus, self.corpus_column) if self.corpus is not None else ()
        return judge_pairs(given.anchors, given.positives, extra)

    def _read_beir(self) -> Judged:
        queries = _id_table(self.queries, "text", "queries")
        corpus = _id_table(self.corpus, self.corpus_column, "corpus")
        at = {cid: i for i, cid in enumerate(corpus)}
        relevant: dict[str, set[int]] = {}
        for row in iter_rows(self.qrels, _qrels_columns(self.qrels)):
            qid, cid = str(row["query-id"]), str(row["corpus-id"])
            if qid not in queries or cid not in at:
                side, value = ("queries", qid) if qid not in queries else ("corpus", cid)
                raise ZooError(f"{self.qrels} judges {value!r}, which is no id of the {side} table: fix the qrels or "
                               f"the {side}")
            if float(row.get("score", 1)) > 0:
                relevant.setdefault(qid, set()).add(at[cid])
        kept = [qid for qid in queries if relevant.get(qid)]
        return Judged([queries[qid] for qid in kept], list(corpus.values()), list(corpus), [relevant[q] for q in kept],
                      left_out=len(queries) - len(kept))


def judge_pairs(queries: Sequence[Any], positives: Sequence[Any], extra: Sequence[Any] = ()) -> Judged:
    """Judgements from pairs: each distinct query once, the corpus of every distinct positive and
    then ``extra``, a query's relevant items all its positives. Values are told apart by content
    (texts, bytes, arrays, images), so a repeated positive is one corpus item."""
    query_at: dict[bytes, int] = {}
    doc_at: dict[bytes, int] = {}
    first_query: list[int] = []
    first_doc: list[int] = []
    relevant: list[set[int]] = []
    for i, (query, positive) in enumerate(zip(queries, positives)):
        key = content_key(query)
        if key not in query_at:
            query_at[key] = len(query_at)
            first_query.append(i)
            relevant.append(set())
        doc = content_key(positive)
        if doc not in doc_at:
            doc_at[doc] = len(doc_at)
            first_doc.append(i)
        relevant[query_at[key]].add(doc_at[doc])
    for j, item in enumerate(extra):
        if doc_at.setdefault(content_key(item), len(doc_at)) == len(first_doc):
            first_doc.append(len(positives) + j)
    docs = [*positives, *extra]
    return Judged([queries[i] for i in first_query], [docs[i] for i in first_doc], list(range(len(first_doc))),
                  relevant, query_at=first_query, corpus_at=first_doc)


def pair_scores(query_rows: np.ndarray, positive_rows: np.ndarray, judged: Judged, cutoffs: Cutoffs
                ) -> dict[str, float]:
    """The retrieval figures of pairs' rows (one per pair, in order) under :func:`judge_pairs`'
    judgements: the task's metrics, which finetuning's validation reports too."""
    scores = _ranked_scores(query_rows[judged.query_at], positive_rows[judged.corpus_at], judged.relevant,
                            judged.corpus_ids, cutoffs)
    return {name: float(v.mean()) for name, v in scores.items()}


def _ranked_scores(queries: np.ndarray, corpus: np.ndarray, relevant: list[set[int]], corpus_ids: list[Any],
                   cutoffs: Cutoffs) -> dict[str, np.ndarray]:
    ranked = top_k(queries, corpus, cutoffs.deepest, id_ranks(corpus_ids))
    return per_query_scores(ranked, relevant, cutoffs)


def _corpus_items(corpus: Any, column: str) -> list[Any]:
    """Extra corpus items: a list, a text file (one per line), a table's column, or a folder's media files."""

    if not isinstance(corpus, (str, Path)):
        return list(corpus)
    path = Path(corpus)
    if path.is_dir():
        suffixes = get_registry().media_suffixes()
        return [str(p) for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in suffixes]
    return [item for _, item in open_inputs(str(path), modality="text", column=column if is_table(path) else None)]


def _id_table(path: Any, text_column: str, what: str) -> dict[str, Any]:
    """A BEIR-style table as ``{id: text}`` (ids as text, so they meet the qrels' ids)."""
    id_column = "_id" if "_id" in table_columns(path) else "id"
    out: dict[str, Any] = {}
    for row in iter_rows(path, [id_column, text_column]):
        key = str(row[id_column])
        if key in out:
            raise ZooError(f"{path}: id {key!r} appears twice in the {what} table; ids must be unique")
        out[key] = row[text_column]
    return out


def _qrels_columns(path: Any) -> Sequence[str]:
    columns = table_columns(path)
    return ["query-id", "corpus-id", *(["score"] if "score" in columns else [])]
