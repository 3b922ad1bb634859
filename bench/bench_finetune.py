"""Finetuning speed and quality, each side in its own process, alternating rounds.

Data: Debian's fortunes labelled by their file (six categories), split into training and held-out
examples with a fixed seed. Every side trains MiniLM end to end (``strategy="full"``) for the same
steps, batch and learning rate, then predicts the held-out set; it reports training samples per
second (the timed pass only: model loading and the first batch, which warms the allocator, are not
counted), held-out accuracy and its peak memory (max RSS).

Sides (``--sides``):
  fp32, bf16   zoo's finetune with ``precision="fp32"`` / ``"bf16"`` (autocast on the CPU): whether
               bf16 is faster on this CPU, and what it costs in accuracy.

    python bench/bench_finetune.py [--train 1200] [--test 600] [--epochs 1] [--batch-size 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sides import alternate, child

FORTUNES = Path("/usr/share/games/fortunes")
CATEGORIES = ("science", "computers", "food", "love", "politics", "sports")


def labelled(n_train: int, n_test: int, seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(text, category) pairs of fortunes of up to 60 words, shuffled and split for ``seed``."""
    rows = []
    for category in CATEGORIES:
        quotes = (FORTUNES / category).read_text(errors="replace").split("\n%\n")
        rows += [(" ".join(q.split()), category) for q in quotes if 3 <= len(q.split()) <= 60]
    random.Random(seed).shuffle(rows)
    return rows[:n_train], rows[n_train:n_train + n_test]


def zoo_side(args: argparse.Namespace, precision: str) -> tuple[np.ndarray, dict[str, float]]:
    import zoo

    train, test = labelled(args.train, args.test, args.seed)
    model = zoo.load("minilm-l6", device="cpu")
    options = {"strategy": "full", "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
               "progress": False, "precision": precision}
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: one batch, so that timing starts warm
        model.finetune(train[:args.batch_size], epochs=1, output_dir=Path(tmp) / "warm", **options)
        began = time.perf_counter()
        run = model.finetune(train, epochs=args.epochs, output_dir=Path(tmp) / "run", **options)
        seconds = time.perf_counter() - began
        probs = run.model.predict_proba([t for t, _ in test])
    labels = run.model.labels
    accuracy = float(np.mean([labels[i] == c for i, (_, c) in zip(probs.argmax(1), test)]))
    return probs, {"samples_per_s": args.epochs * len(train) / seconds, "accuracy": accuracy,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


SIDES = {"fp32": lambda a: zoo_side(a, "fp32"), "bf16": lambda a: zoo_side(a, "bf16")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=1200)
    parser.add_argument("--test", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sides", default="fp32,bf16")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args.side, args.vectors, {args.side: lambda: SIDES[args.side](args)})
        return
    sides = [s.strip() for s in args.sides.split(",")]
    argv = list(sys.argv[1:])
    runs = alternate(__file__, sides, argv, args.rounds)
    print(f"MiniLM, full finetune, {args.train} fortunes in {len(CATEGORIES)} categories, {args.epochs} epoch(s), "
          f"batch {args.batch_size}; median of {args.rounds} rounds, each side in its own process")
    print(f"{'side':<8}{'samples/s':>11}{'accuracy':>10}{'peak RSS MB':>13}")
    medians = {}
    for side, results in runs.items():
        medians[side] = statistics.median(r["samples_per_s"] for r in results)
        print(f"{side:<8}{medians[side]:>11.1f}{statistics.median(r['accuracy'] for r in results):>10.3f}"
              f"{statistics.median(r['peak_rss_mb'] for r in results):>13.0f}")
    if "fp32" in medians:
        for side in sides[1:]:
            moved = float(np.abs(runs[side][-1]["vectors"] - runs["fp32"][-1]["vectors"]).max())
            print(f"{side} / fp32: {medians[side] / medians['fp32']:.2f}x (held-out probabilities differ from fp32's "
                  f"by up to {moved:.3f})")


if __name__ == "__main__":
    main()
