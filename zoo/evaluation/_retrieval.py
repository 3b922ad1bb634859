"""Retrieval scores: each query's top-k corpus rows by cosine similarity, found block by block
(never a queries x corpus matrix), and sentence-transformers' ``InformationRetrievalEvaluator``
metrics per query, so that a bootstrap can resample the queries.

The ranking follows that evaluator: descending score, ties broken by ascending corpus id, so the
result depends on neither block size. Each metric is its definition for binary relevance:
accuracy@k (a relevant row in the top k), precision@k (relevant rows in the top k over k),
recall@k (over the query's relevant rows), MRR@k, nDCG@k (ideal DCG of the relevant rows, at most
k) and MAP@k (summed precision at each relevant row, over ``min(k, relevant rows)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zoo.core._rows import unit_rows

if TYPE_CHECKING:
    import numpy as np

#: sentence-transformers' defaults, so that its users read the same columns
ACCURACY_AT = (1, 3, 5, 10)
PRECISION_RECALL_AT = (1, 3, 5, 10)
MRR_AT = (10,)
NDCG_AT = (10,)
MAP_AT = (100,)
QUERY_BLOCK = 256
CORPUS_BLOCK = 16_384


@dataclass(frozen=True)
class Cutoffs:
    """The k of each metric, as ``InformationRetrievalEvaluator`` takes them."""

    accuracy: tuple[int, ...] = ACCURACY_AT
    precision_recall: tuple[int, ...] = PRECISION_RECALL_AT
    mrr: tuple[int, ...] = MRR_AT
    ndcg: tuple[int, ...] = NDCG_AT
    map: tuple[int, ...] = MAP_AT

    @property
    def deepest(self) -> int:
        """How many rows each query needs ranked."""
        return max((*self.accuracy, *self.precision_recall, *self.mrr, *self.ndcg, *self.map))


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int, id_rank: np.ndarray, *,
          query_block: int = QUERY_BLOCK, corpus_block: int = CORPUS_BLOCK) -> np.ndarray:
    """``(len(queries), min(k, len(corpus)))`` corpus positions, best first by cosine similarity,
    ties by ascending ``id_rank`` (each corpus row's place in the sorted corpus ids)."""
    import numpy as np


    k = min(k, len(corpus))
    unit_corpus = unit_rows(corpus)
    out = np.empty((len(queries), k), dtype=np.int64)
    for q0 in range(0, len(queries), query_block):
        block = unit_rows(queries[q0:q0 + query_block]).astype(np.float64)
        best_scores = np.empty((len(block), 0), dtype=np.float32)
        best_at = np.empty((len(block), 0), dtype=np.int64)
        for c0 in range(0, len(unit_corpus), corpus_block):
            # Summed in float64, then rounded to float32: a product's last float32 bit no longer
            # depends on where BLAS's tiling puts it, so equal rows tie in any block (a row must
            # not depend on its batch), and the order is float32 cosine's, as the evaluator's.
            scores = (block @ unit_corpus[c0:c0 + corpus_block].T.astype(np.float64)).astype(np.float32)
            at = _block_top(scores, k, id_rank[c0:c0 + corpus_block]) + c0
            best_scores = np.concatenate([best_scores, np.take_along_axis(scores, at - c0, 1)], axis=1)
            best_at = np.concatenate([best_at, at], axis=1)
            order = np.lexsort((id_rank[best_at], -best_scores), axis=1)[:, :k]
            best_scores, best_at = np.take_along_axis(best_scores, order, 1), np.take_along_axis(best_at, order, 1)
        out[q0:q0 + len(block)] = best_at
    return out


def _block_top(scores: np.ndarray, k: int, id_rank: np.ndarray) -> np.ndarray:
    """Each row's ``min(k, width)`` best columns, unordered: every score above the k-th best, then
    the ties at it with the lowest id ranks (sentence-transformers' rule, so no tie is arbitrary)."""
    import numpy as np

    k = min(k, scores.shape[1])
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1:k]
    big = np.iinfo(np.int64).max
    keys = np.where(scores > kth, -1, np.where(scores == kth, id_rank[None, :].astype(np.int64), big))
    return np.argpartition(keys, k - 1, axis=1)[:, :k]


def id_ranks(ids: Sequence[Any]) -> np.ndarray:
    """Each id's position in ascending order (ids of mixed types order by their text)."""
    import numpy as np

    try:
        order = sorted(range(len(ids)), key=ids.__getitem__)
    except TypeError:
        order = sorted(range(len(ids)), key=lambda i: str(ids[i]))
    ranks = np.empty(len(ids), dtype=np.int64)
    ranks[order] = np.arange(len(ids))
    return ranks


def per_query_scores(ranked: np.ndarray, relevant: Sequence[set[int]], cutoffs: Cutoffs = Cutoffs()
                     ) -> dict[str, np.ndarray]:
    """Every metric of every query, named as sentence-transformers names them (``ndcg@10``...),
    from the ranked corpus positions and each query's set of relevant positions; the mean of a
    column is the evaluator's figure."""
    import numpy as np

    hits = np.array([[at in rel for at in row] for row, rel in zip(ranked.tolist(), relevant)], dtype=bool)
    hits = hits.reshape(len(relevant), ranked.shape[1])
    n_rel = np.array([len(rel) for rel in relevant], dtype=np.float64)
    rank = np.arange(1, hits.shape[1] + 1, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for k in cutoffs.accuracy:
        out[f"accuracy@{k}"] = np.asarray(hits[:, :k].any(axis=1), dtype=np.float64)
    for k in cutoffs.precision_recall:
        out[f"precision@{k}"] = hits[:, :k].sum(axis=1) / k
        out[f"recall@{k}"] = hits[:, :k].sum(axis=1) / n_rel
    for k in cutoffs.mrr:
        first = np.where(hits[:, :k].any(axis=1), hits[:, :k].argmax(axis=1) + 1, np.inf)
        out[f"mrr@{k}"] = np.asarray(1.0 / first)
    for k in cutoffs.ndcg:
        gains = 1.0 / np.log2(rank[:k] + 1)
        ideal = np.array([_ideal(n, k) for n in n_rel])
        out[f"ndcg@{k}"] = (hits[:, :k] * gains[:hits[:, :k].shape[1]]).sum(axis=1) / ideal
    for k in cutoffs.map:
        found = hits[:, :k]
        precision_at_hit = np.cumsum(found, axis=1) / rank[:found.shape[1]]
        out[f"map@{k}"] = (precision_at_hit * found).sum(axis=1) / np.minimum(k, n_rel)
    return out


def _ideal(relevant: float, k: int) -> float:
    """The DCG of ``min(relevant, k)`` relevant rows ranked first."""
    import numpy as np

    return float((1.0 / np.log2(np.arange(2, int(min(relevant, k)) + 2))).sum())
