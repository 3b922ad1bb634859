"""zoo featurize vs sentence-transformers `encode` on the same MiniLM weights and batch size.

Both run side by side, alternating, several rounds, on two corpora: real text (Debian's fortunes:
varied length, layout and punctuation) and synthetic text (random words, where a text's character
count tracks its token count). Prints the median throughput of each, the ratio, the lowest
per-item cosine similarity between the two outputs, and the padded tokens each ran.

sentence-transformers sorts a batch by character count; zoo sorts by token count, which is what
the model pays for. Both then run the same BERT kernels at the same speed per padded token.

    python bench/bench_text.py [--n 1000] [--rounds 3] [--batch-size 32] [--corpus fortunes synthetic]
"""

from __future__ import annotations

import argparse
import statistics
import time

import datasets
import numpy as np


def padded_tokens(lengths: list[int], order: list[int], batch_size: int) -> int:
    return sum(max(lengths[i] for i in order[s:s + batch_size]) * len(order[s:s + batch_size])
               for s in range(0, len(order), batch_size))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--corpus", nargs="+", default=["fortunes", "synthetic"], choices=["fortunes", "synthetic"])
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    import zoo

    ours = zoo.load("minilm-l6", device="cpu")
    theirs = SentenceTransformer(str(ours.files.root), device="cpu")
    print(f"torch threads: {torch.get_num_threads()}, {args.n} texts per corpus, batch size {args.batch_size}")
    for corpus in args.corpus:
        texts = getattr(datasets, corpus)(args.n)
        zoo_times, st_times = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            a = ours.featurize(texts, batch_size=args.batch_size, progress=False)
            zoo_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            b = theirs.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
            st_times.append(time.perf_counter() - t)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        lengths = ours.tokenizer(texts, truncation=True, max_length=ours.max_length, return_length=True)["length"]
        by_tokens = padded_tokens(lengths, sorted(range(len(texts)), key=lambda i: -lengths[i]), args.batch_size)
        by_chars = padded_tokens(lengths, sorted(range(len(texts)), key=lambda i: -len(texts[i])), args.batch_size)
        z, s = statistics.median(zoo_times), statistics.median(st_times)
        print(f"[{corpus}] {sum(lengths)} tokens; padded: zoo {by_tokens}, sentence-transformers {by_chars}")
        print(f"  zoo featurize:                {args.n / z:7.1f} texts/s (median of {args.rounds})")
        print(f"  sentence-transformers encode: {args.n / s:7.1f} texts/s")
        print(f"  ratio zoo / sentence-transformers: {s / z:.2f}x   min cosine {cos.min():.6f}")


if __name__ == "__main__":
    main()
