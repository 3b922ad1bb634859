"""Searching sparse rows at scale: the zoo-sparse plugin's inverted store against the product
sentence-transformers scores sparse embeddings with (``SparseEncoder.similarity``, a dot product of
sparse tensors, then ``torch.topk``), on the same rows.

The rows are synthetic, drawn the way SPLADE rows fall: ``--active`` terms per document and
``--query-active`` per query out of a 30,522-term vocabulary, term ids Zipf-distributed (a few
terms in most documents, most terms in few), weights log-normal. Sides, each in its own
interpreter (see ``sides.py``), alternating, ``--rounds`` rounds:

- ``zoo``: ``InvertedStore.add`` (the corpus, in 65,536-row batches as ``zoo index`` adds them)
  and the postings built (what ``zoo index`` writes), then ``search`` of every query (top 10).
- ``st``: the corpus and the queries as sparse tensors, then ``similarity`` (a sparse matrix
  product) and ``torch.topk``.

Each side's time to make its rows searchable is printed beside its queries per second.

Prints documents, each side's median queries per second, the ratio, and the share of top-10
lists the two sides agree on.

    pip install ./examples/zoo-sparse
    python bench/bench_sparse_index.py [--documents 100000] [--queries 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sides import alternate, child

VOCABULARY = 30522


def synthetic(rows: int, active: int, seed: int) -> Any:
    """``rows`` SPLADE-like CSR rows of ``active`` distinct terms each (Zipf term ids)."""
    import scipy.sparse

    rng = np.random.default_rng(seed)
    ranks = np.random.default_rng(0).permutation(VOCABULARY)  # the most common term, the second...
    weights = 1.0 / np.arange(1, VOCABULARY + 1) ** 1.1
    cdf = np.cumsum(weights / weights.sum())
    drawn = np.searchsorted(cdf, rng.random((rows, active * 8)))  # Zipf draws, with repeats
    chosen = np.stack([_first_distinct(row, active) for row in drawn])
    indices = np.sort(ranks[np.minimum(chosen, VOCABULARY - 1)], axis=1).reshape(-1)
    values = rng.lognormal(0.0, 0.6, rows * active).astype(np.float32)
    indptr = np.arange(0, rows * active + 1, active)
    return scipy.sparse.csr_array((values, indices, indptr), shape=(rows, VOCABULARY))


def _first_distinct(draws: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` distinct values of ``draws``, in the order drawn."""
    _, first = np.unique(draws, return_index=True)
    kept = draws[np.sort(first)][:n]
    if len(kept) < n:
        raise SystemExit(f"{n} distinct terms per row are more than the draws give; lower --active")
    return kept


def _rows(documents: int, queries: int, active: int, query_active: int) -> tuple[Any, Any]:
    return synthetic(documents, active, seed=0), synthetic(queries, query_active, seed=1)


def zoo_side(corpus: Any, queries: Any) -> tuple[np.ndarray, dict[str, Any]]:
    from zoo_sparse.rows import SparseRows

    began = time.perf_counter()
    store = SparseRows().new_store(VOCABULARY, "inverted", {})
    for start in range(0, corpus.shape[0], 65_536):
        store.add(corpus[start:start + 65_536])
    store.postings()  # what `zoo index` builds and writes; `zoo search` reads it back
    built = time.perf_counter() - began
    began = time.perf_counter()
    scores, top = store.search(queries, 10)
    return scores, {"seconds": time.perf_counter() - began, "build_seconds": built, "top": top.tolist()}


def st_side(corpus: Any, queries: Any) -> tuple[np.ndarray, dict[str, Any]]:
    import torch
    from sentence_transformers.similarity_functions import SimilarityFunction

    def tensor(rows: Any) -> torch.Tensor:
        coo = rows.tocoo()
        return torch.sparse_coo_tensor(np.vstack([coo.row, coo.col]), coo.data, rows.shape).coalesce()

    similarity = SimilarityFunction.to_similarity_fn("dot")
    began = time.perf_counter()
    documents, asked = tensor(corpus), tensor(queries)
    built = time.perf_counter() - began
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "sparse support is in beta"
        found = torch.topk(similarity(asked, documents), 10, dim=1)
    return found.values.numpy(), {"seconds": time.perf_counter() - began, "build_seconds": built,
                                  "top": found.indices.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--active", type=int, default=230, help="terms per document (default 230)")
    parser.add_argument("--query-active", type=int, default=30, help="terms per query (default 30)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        corpus, queries = _rows(args.documents, args.queries, args.active, args.query_active)
        side = {"zoo": zoo_side, "st": st_side}[args.side]
        child(args.side, args.vectors, {args.side: lambda: side(corpus, queries)})
        return
    argv = ["--documents", str(args.documents), "--queries", str(args.queries), "--active", str(args.active),
            "--query-active", str(args.query_active)]
    runs = alternate(__file__, ["zoo", "st"], argv, args.rounds)
    qps = {side: statistics.median(args.queries / r["seconds"] for r in rs) for side, rs in runs.items()}
    for side, results in runs.items():
        each = ", ".join(f"{args.queries / r['seconds']:.0f}" for r in results)
        built = statistics.median(r["build_seconds"] for r in results)
        print(f"{side:>4}: {qps[side]:9.1f} queries/s (median of {len(results)}: {each}); rows made searchable "
              f"in {built:.2f} s")
    same = float(np.mean([a == b for a, b in zip(runs["zoo"][0]["top"], runs["st"][0]["top"])]))
    gap = float(np.abs(runs["zoo"][0]["vectors"] - runs["st"][0]["vectors"]).max())
    print(f"zoo / st: {qps['zoo'] / qps['st']:.2f}x queries per second over {args.documents} documents "
          f"({args.active} terms each, queries of {args.query_active}); identical top-10 lists {same:.3f}, "
          f"largest top-10 score difference {gap:.2e}")
    print(json.dumps({"queries_per_s": qps, "same_top10": same, "max_abs_diff": gap}))


if __name__ == "__main__":
    main()
