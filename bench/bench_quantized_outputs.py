"""What quantized outputs keep: retrieval agreement with float32 and size, MiniLM on real text.

The corpus is Debian's fortunes (every distinct one, no offensive categories); the queries are
``--queries`` of them, searched against the rest. Each precision is applied with
``zoo.core._quantize.quantize`` (what ``featurize(..., precision=...)`` runs, as sentence-transformers'
``quantize_embeddings``; int8 / uint8 buckets calibrated on the corpus) and searched the way a store of that type would be: integer inner product for int8 / uint8,
Hamming distance for the packed binary ones. Two more rows use the float query against the stored
codes: int8 decoded to bucket centres, and binary's Hamming top-40 rescored with the float query
against the bits (the rescoring sentence-transformers recommends). Agreement is the mean share of
float32's top-10 found in the quantized top-10.

    python bench/bench_quantized_outputs.py [--queries 500]
"""

from __future__ import annotations

import argparse
import time

import bench_inputs
import numpy as np


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def scores_for(precision: str, queries: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    if precision in ("binary", "ubinary"):  # fewer differing bits is closer
        q = np.unpackbits(queries.view(np.uint8), axis=1).astype(np.int32)
        c = np.unpackbits(corpus.view(np.uint8), axis=1).astype(np.int32)
        return -(q @ (1 - c).T + (1 - q) @ c.T)
    offset = 128 if precision == "uint8" else 0  # centre the buckets so the inner product is symmetric
    return (queries.astype(np.int32) - offset) @ (corpus.astype(np.int32) - offset).T


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    import zoo
    from zoo.core._quantize import calibration_ranges, quantize

    texts = list(dict.fromkeys(bench_inputs.fortunes(100_000)))  # every distinct fortune, in order
    queries, corpus = texts[:args.queries], texts[args.queries:]
    model = zoo.load("minilm-l6", device="cpu")
    began = time.perf_counter()
    float_corpus = model.featurize(corpus, batch_size=64, progress=False)
    float_queries = model.featurize(queries, batch_size=64, progress=False)
    print(f"minilm-l6: {len(corpus)} fortunes, {len(queries)} queries, top-{args.k}; "
          f"embedded in {time.perf_counter() - began:.0f} s")
    ranges = calibration_ranges(float_corpus)
    reference = top_k(float_queries @ float_corpus.T, args.k)
    def report(name: str, docs: np.ndarray, found: np.ndarray) -> None:
        agreement = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found, reference)])
        size = f"1/{float_corpus.nbytes / docs.nbytes:.0f}"
        print(f"| {name} | {docs.nbytes // len(corpus)} | {size} | {agreement:.3f} |")

    print("| precision, search | bytes per vector | size | top-10 agreement with float32 |")
    print("| --- | ---: | ---: | ---: |")
    report("float32, inner product", float_corpus, reference)
    for precision in ("int8", "uint8", "binary", "ubinary"):
        docs = quantize(float_corpus, precision, ranges)
        asked = quantize(float_queries, precision, ranges)
        found = top_k(scores_for(precision, asked, docs), args.k)
        report(f"{precision}, {'Hamming' if precision.endswith('binary') else 'integer inner product'}", docs, found)
        if precision == "int8":
            steps = (ranges[1] - ranges[0]) / 255
            decoded = ranges[0] + (docs.astype(np.float32) + 128.5) * steps
            report("int8, float query on the decoded buckets", docs, top_k(float_queries @ decoded.T, args.k))
        if precision == "ubinary":
            candidates = top_k(scores_for(precision, asked, docs), 4 * args.k)
            bits = np.unpackbits(docs, axis=1)[:, :float_corpus.shape[1]].astype(np.float32) * 2 - 1
            rescored = [c[np.argsort(-(bits[c] @ q), kind="stable")[:args.k]] for c, q in zip(candidates, float_queries)]
            report("ubinary, Hamming top-40 rescored with the float query", docs, np.array(rescored))


if __name__ == "__main__":
    main()
