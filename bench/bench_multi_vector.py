"""A multi-vector (ColBERT-style) model through zoo against sentence-transformers'
``MultiVectorEncoder`` on the same folder, texts and batch size: encoding documents, and MaxSim
search of the encoded corpus.

The model is a ColBERT over MiniLM-L6's real body: sentence-transformers' ``Transformer`` from the
MiniLM weights (queries ``[MASK]``-expanded to 32 tokens, documents cut at 180), a seeded 384 to
128 token projection, a punctuation skiplist and unit-length token vectors, with ``[Q] `` / ``[D] ``
prompts, saved by ``MultiVectorEncoder.save``. No trained ColBERT weights are on this machine, so
this is the size and speed of a MiniLM ColBERT; its scores have no meaning. The texts are Debian
fortunes; the queries are the first line of held-out ones.

Sides, each in its own interpreter (see ``sides.py``), alternating, ``--rounds`` rounds:

- ``zoo``: ``zoo.load(folder).featurize(texts, role="document")``, the queries with
  ``role="query"``, the corpus in a ``flat`` store (exact MaxSim, as ``zoo index`` builds it) and
  in an ``hnsw`` one (token candidates re-scored exactly); the top 10 of each query from both.
- ``st``: ``encode_document`` / ``encode_query``, then ``similarity`` against every document and
  ``torch.topk``.

Prints each side's median documents per second and queries per second, the ratios, the largest
difference between the two sides' token vectors (the first 64 documents), how often the top-10
lists agree, the hnsw store's recall@10 against exact MaxSim, and the index's bytes per document.

    python bench/bench_multi_vector.py [--texts 2000] [--queries 200] [--rounds 3] [--batch-size 32]
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import bench_inputs
import numpy as np
from sides import retrieval_runs

SHOWN = 64  # documents whose token vectors each side hands back for the comparison


def colbert_folder(root: Path) -> Path:
    """MiniLM-L6's body, a seeded token projection, a skiplist and unit vectors, saved by
    ``MultiVectorEncoder.save``."""
    import string

    import torch
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformer = Transformer(str(bench_inputs.minilm_dir()), document_length=180,
                                  query_expansion={"strategy": "fixed", "attend": True, "length": 32,
                                                   "token": "[MASK]"})
        modules = [transformer, Dense(384, 128, bias=False, activation_function=torch.nn.Identity(),
                                      module_input_name="token_embeddings"),
                   MultiVectorMask(skiplist_words=list(string.punctuation)),
                   Normalize(module_input_name="token_embeddings")]
        MultiVectorEncoder(modules=modules, prompts={"query": "[Q] ", "document": "[D] "}, device="cpu").save(
            str(root / "colbert"), create_model_card=False)
    return root / "colbert"


def _split(texts: list[str], queries: int) -> tuple[list[str], list[str]]:
    return texts[queries:], [t.splitlines()[0][:80] for t in texts[:queries]]


def zoo_side(folder: str, texts: list[str], queries: int, batch_size: int) -> tuple[np.ndarray, dict[str, Any]]:
    import zoo
    from zoo.core._token_rows import MultiVectorRows

    model = zoo.load(folder, device="cpu")
    corpus, asked = _split(texts, queries)
    model.featurize(corpus[:64], role="document", batch_size=batch_size, progress=False)  # warm-up
    began = time.perf_counter()
    rows = model.featurize(corpus, role="document", batch_size=batch_size, progress=False)
    encoded = time.perf_counter() - began
    query_rows = model.featurize(asked, role="query", batch_size=batch_size, progress=False)
    found, seconds, sizes = {}, {}, {}
    for index_type in ("flat", "hnsw"):
        rows_format = MultiVectorRows()
        store = rows_format.new_store(model.embed_dim, index_type, rows_format.index_options(index_type, {}))
        store.add(rows)
        with tempfile.TemporaryDirectory() as tmp:
            sizes[index_type] = sum((Path(tmp) / name).stat().st_size for name in store.write(Path(tmp)))
        began = time.perf_counter()
        found[index_type] = store.search(query_rows, 10)[1]
        seconds[index_type] = time.perf_counter() - began
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found["flat"], found["hnsw"])]))
    return rows[:SHOWN].vectors, {"seconds": encoded, "search_seconds": seconds["flat"],
                                  "hnsw_seconds": seconds["hnsw"], "top": found["flat"].tolist(),
                                  "hnsw_recall": recall, "bytes_per_document": {k: v / len(corpus)
                                                                                for k, v in sizes.items()},
                                  "tokens_per_document": float(rows.lengths.mean())}


def st_side(folder: str, texts: list[str], queries: int, batch_size: int) -> tuple[np.ndarray, dict[str, Any]]:
    import torch
    from sentence_transformers import MultiVectorEncoder

    model = MultiVectorEncoder(folder, device="cpu", local_files_only=True)
    corpus, asked = _split(texts, queries)
    model.encode_document(corpus[:64], batch_size=batch_size, show_progress_bar=False)  # warm-up
    began = time.perf_counter()
    rows = model.encode_document(corpus, batch_size=batch_size, show_progress_bar=False)
    encoded = time.perf_counter() - began
    query_rows = model.encode_query(asked, batch_size=batch_size, show_progress_bar=False)
    began = time.perf_counter()
    top = torch.topk(model.similarity(query_rows, rows), 10, dim=1).indices
    searched = time.perf_counter() - began
    return torch.cat(rows[:SHOWN]).numpy(), {"seconds": encoded, "search_seconds": searched, "top": top.tolist()}


def main() -> None:
    args, runs = retrieval_runs(__file__, __doc__ or "", {"zoo": zoo_side, "st": st_side}, colbert_folder)
    speed = {side: statistics.median(args.texts / r["seconds"] for r in rs) for side, rs in runs.items()}
    qps = {side: statistics.median(args.queries / r["search_seconds"] for r in rs) for side, rs in runs.items()}
    hnsw = statistics.median(args.queries / r["hnsw_seconds"] for r in runs["zoo"])
    for side, results in runs.items():
        each = ", ".join(f"{args.texts / r['seconds']:.1f}" for r in results)
        print(f"{side:>4}: {speed[side]:7.1f} documents/s (median of {len(results)}: {each}); "
              f"{qps[side]:8.1f} queries/s exact over {args.texts} documents")
    zoo_run, st_run = runs["zoo"][0], runs["st"][0]
    gap = float(np.abs(zoo_run["vectors"] - st_run["vectors"]).max()) \
        if zoo_run["vectors"].shape == st_run["vectors"].shape else float("inf")
    same_top = float(np.mean([a == b for a, b in zip(zoo_run["top"], st_run["top"])]))
    print(f"zoo / st: {speed['zoo'] / speed['st']:.2f}x documents per second, {qps['zoo'] / qps['st']:.2f}x queries "
          f"per second; largest token-vector difference {gap:.2e}; identical top-10 lists {same_top:.3f}")
    print(f"zoo hnsw: {hnsw:.1f} queries/s, recall@10 against exact {zoo_run['hnsw_recall']:.3f}; "
          f"{zoo_run['tokens_per_document']:.1f} token vectors per document; index bytes per document: "
          + ", ".join(f"{k} {v:,.0f}" for k, v in zoo_run["bytes_per_document"].items()))
    print(json.dumps({"documents_per_s": speed, "queries_per_s": qps, "hnsw_queries_per_s": hnsw,
                      "hnsw_recall": zoo_run["hnsw_recall"], "max_abs_diff": gap, "same_top10": same_top,
                      "bytes_per_document": zoo_run["bytes_per_document"]}))


if __name__ == "__main__":
    main()
