"""zoo index / zoo search at scale: build time, query latency and the recall of the approximate
index against exact search.

Rows: MiniLM embeddings of ``--n`` real-ish short texts (made once, kept in ``--work``); for the
larger sizes (``--sizes``) those rows are repeated with a small random perturbation (each copy
re-normalised), which keeps the clustered shape of real embeddings. Queries are 1000 other texts
embedded by the same model. Prints, per size and kind: build seconds, median and p99 latency of
single queries, and recall@10 of HNSW against the exact index.

    python bench/bench_search.py [--n 100000] [--sizes 100000 1000000] [--work /tmp/zoo-bench-search]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import bench_inputs
import numpy as np


def _rows(args: argparse.Namespace) -> tuple[Path, np.ndarray]:
    """The base embedding file (written by zoo embed) and 1000 query rows."""
    import zoo
    from zoo.embeddings._embed import embed_to_file
    from zoo.embeddings._inputs import open_inputs

    args.work.mkdir(parents=True, exist_ok=True)
    base = args.work / f"base-{args.n}.parquet"
    texts = bench_inputs.short_texts(args.n + 1000, seed=1)
    model = zoo.load("minilm-l6", device="cpu")
    if not base.is_file():
        lines = args.work / f"base-{args.n}.txt"
        lines.write_text("\n".join(texts[:args.n]) + "\n")
        embed_to_file(model, open_inputs(str(lines)), base, batch_size=64)
    return base, model.featurize(texts[args.n:], progress=False)


def _scaled(base: Path, size: int, work: Path) -> Path:
    """An embedding file of ``size`` rows: the base rows, then perturbed copies of them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zoo.embeddings._embed import _schema, _table
    from zoo.embeddings._embedding_file import read_embeddings

    out = work / f"rows-{size}.parquet"
    if out.is_file():
        return out
    emb = read_embeddings(base)
    schema = _schema(emb.rows.shape[1], pa.int64(), emb.provenance)
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(out, schema) as writer:
        for start in range(0, size, len(emb.rows)):
            rows = emb.rows[: min(len(emb.rows), size - start)]
            if start:
                rows = rows + 0.05 * rng.standard_normal(rows.shape).astype(np.float32)
                rows /= np.linalg.norm(rows, axis=1, keepdims=True)
            ids = list(range(start, start + len(rows)))
            writer.write_table(_table(ids, rows, [f"{start}:{i}" for i in range(len(rows))], schema))
    return out


def _measure(parquet: Path, kind: str, queries: np.ndarray, work: Path) -> tuple[dict, list]:
    import shutil

    from zoo import search

    folder = work / f"{parquet.stem}-{kind}.idx"
    shutil.rmtree(folder, ignore_errors=True)
    began = time.perf_counter()
    index = search.build(parquet, folder, kind=kind)
    built = time.perf_counter() - began
    latencies, hits = [], []
    for q in queries:
        began = time.perf_counter()
        hits.append({h.id for h in index.search_vectors(q, 10)[0]})
        latencies.append(time.perf_counter() - began)
    return {"build_s": built, "p50_ms": 1000 * float(np.median(latencies)),
            "p99_ms": 1000 * float(np.percentile(latencies, 99))}, hits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/zoo-bench-search"))
    args = parser.parse_args()
    import faiss

    base, queries = _rows(args)
    print(f"MiniLM rows, 1000 single queries, k=10, FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    for size in args.sizes:
        parquet = _scaled(base, size, args.work)
        flat, truth = _measure(parquet, "flat", queries, args.work)
        hnsw, found = _measure(parquet, "hnsw", queries, args.work)
        recall = float(np.mean([len(t & f) / 10 for t, f in zip(truth, found)]))
        for kind, m in (("flat", flat), ("hnsw", hnsw)):
            print(f"  {size:>9} rows {kind:<5} build {m['build_s']:7.1f} s   query p50 {m['p50_ms']:6.2f} ms"
                  f"  p99 {m['p99_ms']:6.2f} ms")
        print(f"  {size:>9} rows hnsw recall@10 against exact: {recall:.3f}")
        print(json.dumps({"size": size, "flat": flat, "hnsw": hnsw, "recall": recall}))


if __name__ == "__main__":
    main()
