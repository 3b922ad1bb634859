"""zoo featurize vs sentence-transformers `encode` on the same MiniLM weights and batch size.

Runs both side by side, alternating, several rounds; prints the median throughput of each, the
ratio, and the lowest per-item cosine similarity between the two outputs.

    python bench/bench_text.py [--n 2000] [--rounds 5] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np


def corpus(n: int, seed: int = 0) -> list[str]:
    """Sentences of varied length (4 to 120 words), as real corpora have."""
    from pathlib import Path

    words = Path(__file__).resolve().parent.parent.joinpath("examples", "sentences.txt").read_text().split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(int(rng.paretovariate(1.2) * 4) % 120 + 4)) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    import zoo

    texts = corpus(args.n)
    ours = zoo.load("minilm-l6", device="cpu")
    theirs = SentenceTransformer(str(ours.files.root), device="cpu")
    print(f"torch threads: {torch.get_num_threads()}, {args.n} texts, batch size {args.batch_size}")
    zoo_times, st_times = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        a = ours.featurize(texts, batch_size=args.batch_size, progress=False)
        zoo_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = theirs.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        st_times.append(time.perf_counter() - t)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    z, s = statistics.median(zoo_times), statistics.median(st_times)
    print(f"zoo featurize:                 {args.n / z:8.1f} texts/s (median of {args.rounds})")
    print(f"sentence-transformers encode:  {args.n / s:8.1f} texts/s")
    print(f"ratio zoo / sentence-transformers: {s / z:.2f}x   min cosine {cos.min():.6f}")


if __name__ == "__main__":
    main()
