"""zoo featurize vs sentence-transformers `encode` on the same MiniLM weights and batch size.

Each side runs in its own interpreter (see ``sides.py``), alternating, several rounds, after a
warm-up on 64 texts, on two corpora: real text (Debian's fortunes: varied length, layout and
punctuation) and synthetic text (random words, where a text's character count tracks its token
count). Prints the median throughput of each, the ratio, the lowest per-item cosine similarity
between the two outputs, and the padded tokens each ran.

sentence-transformers sorts a batch by character count; zoo sorts by token count, which is what
the model pays for, and keeps freed activations mapped between batches (``zoo.allocator``).

    python bench/bench_text.py [--n 2000] [--rounds 3] [--batch-size 32] [--corpus fortunes synthetic]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from sides import alternate, child, min_cosine


def padded_tokens(lengths: list[int], order: list[int], batch_size: int) -> int:
    return sum(max(lengths[i] for i in order[s:s + batch_size]) * len(order[s:s + batch_size])
               for s in range(0, len(order), batch_size))


def zoo_side(texts: list[str], args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    import zoo

    ours = zoo.load("minilm-l6", device="cpu")
    ours.featurize(texts[:64], batch_size=args.batch_size, progress=False)
    began = time.perf_counter()
    vectors = ours.featurize(texts, batch_size=args.batch_size, progress=False)
    seconds = time.perf_counter() - began
    lengths = ours.tokenizer(texts, truncation=True, max_length=ours.max_length, return_length=True)["length"]
    return vectors, {"seconds": seconds, "lengths": lengths}


def st_side(texts: list[str], args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    from sentence_transformers import SentenceTransformer

    from zoo.loader import locate_files, resolve

    folder = locate_files(resolve("minilm-l6")).root  # the same files; zoo runs nothing here
    theirs = SentenceTransformer(str(folder), device="cpu")
    encode = dict(batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
    theirs.encode(texts[:64], **encode)
    began = time.perf_counter()
    vectors = theirs.encode(texts, **encode)
    return vectors, {"seconds": time.perf_counter() - began}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--corpus", nargs="+", default=["fortunes", "synthetic"], choices=["fortunes", "synthetic"])
    parser.add_argument("--side", choices=["zoo", "st"], help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.side:
        texts = getattr(datasets, args.corpus[0])(args.n)
        child(args.side, args.vectors, {"zoo": lambda: zoo_side(texts, args), "st": lambda: st_side(texts, args)})
        return
    print(f"{args.n} texts per corpus, batch size {args.batch_size}, each side in its own process, "
          f"median of {args.rounds}")
    for corpus in args.corpus:
        argv = ["--n", str(args.n), "--batch-size", str(args.batch_size), "--corpus", corpus]
        runs = alternate(__file__, ["zoo", "st"], argv, args.rounds)
        texts = getattr(datasets, corpus)(args.n)
        lengths = runs["zoo"][0]["lengths"]
        by_tokens = padded_tokens(lengths, sorted(range(len(texts)), key=lambda i: -lengths[i]), args.batch_size)
        by_chars = padded_tokens(lengths, sorted(range(len(texts)), key=lambda i: -len(texts[i])), args.batch_size)
        z = statistics.median(r["seconds"] for r in runs["zoo"])
        s = statistics.median(r["seconds"] for r in runs["st"])
        cos = min_cosine(runs["zoo"][-1]["vectors"], runs["st"][-1]["vectors"])
        print(f"[{corpus}] {sum(lengths)} tokens; padded: zoo {by_tokens}, sentence-transformers {by_chars}")
        print(f"  zoo featurize:                {args.n / z:7.1f} texts/s")
        print(f"  sentence-transformers encode: {args.n / s:7.1f} texts/s")
        print(f"  ratio zoo / sentence-transformers: {s / z:.2f}x   min cosine {cos:.6f}")


if __name__ == "__main__":
    main()
