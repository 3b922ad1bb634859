"""Finetuning speed and quality, each side in its own process, alternating rounds.

Data: Debian's fortunes labelled by their file (six categories), split into training and held-out
examples with a fixed seed. Every side trains MiniLM end to end (``strategy="full"``) for the same
steps, batch and learning rate, then predicts the held-out set; it reports training samples per
second (the timed pass only: model loading and the first batch, which warms the allocator, are not
counted), held-out accuracy and its peak memory (max RSS).

Sides (``--sides``):
  fp32, bf16   zoo's finetune with ``precision="fp32"`` / ``"bf16"`` (autocast on the CPU): whether
               bf16 is faster on this CPU, and what it costs in accuracy.
  plain, augmented
               EfficientNet-Lite0 finetuned end to end on scikit-image's ``lfw_subset`` (faces and
               non-faces, 25x25 grey crops upscaled to 64 px; 120 training, 80 held out, a
               stratified split per round's seed), without augmentation and with the weights' own
               train-time transform (``augment="weights"``); ``--epochs`` epochs, lr 1e-3.

    python bench/bench_finetune.py [--train 1200] [--test 600] [--epochs 1] [--batch-size 32] [--rounds 3]
    python bench/bench_finetune.py --sides plain,augmented --epochs 5 --batch-size 16 --rounds 3
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
from sides import child, run_side

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


def faces(seed: int) -> tuple[list[np.ndarray], list[str], list[np.ndarray], list[str]]:
    """lfw_subset as RGB arrays of 64 px, split 120 / 80, stratified, for ``seed``."""
    from PIL import Image
    from skimage import data
    from sklearn.model_selection import train_test_split

    grey = data.lfw_subset()
    images = [np.asarray(Image.fromarray((g * 255).astype(np.uint8)).resize((64, 64)).convert("RGB")) for g in grey]
    labels = ["face"] * 100 + ["other"] * 100
    a, b, y_a, y_b = train_test_split(images, labels, train_size=120, stratify=labels, random_state=seed)
    return a, y_a, b, y_b


def vision_side(args: argparse.Namespace, augment: str | None) -> tuple[np.ndarray, dict[str, float]]:
    import zoo

    train, y_train, test, y_test = faces(args.seed + args.round)
    model = zoo.load("efficientnet-lite0", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        run = model.finetune((train, y_train), strategy="full", epochs=args.epochs, batch_size=args.batch_size,
                             lr=1e-3, seed=args.seed + args.round, augment=augment, output_dir=Path(tmp) / "run",
                             progress=False)
        seconds = time.perf_counter() - began
        probs = run.model.predict_proba(test)
    predicted = [run.model.labels[i] for i in probs.argmax(1)]
    return probs, {"samples_per_s": args.epochs * len(train) / seconds,
                   "accuracy": float(np.mean([p == y for p, y in zip(predicted, y_test)])),
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


SIDES = {"fp32": lambda a: zoo_side(a, "fp32"), "bf16": lambda a: zoo_side(a, "bf16"),
         "plain": lambda a: vision_side(a, None), "augmented": lambda a: vision_side(a, "weights")}


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
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args.side, args.vectors, {args.side: lambda: SIDES[args.side](args)})
        return
    sides = [s.strip() for s in args.sides.split(",")]
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for r in range(args.rounds):  # each round: every side in turn, on that round's split
        for side in sides:
            runs[side].append(run_side(__file__, side, [*sys.argv[1:], "--round", str(r)]))
    print(f"{', '.join(sides)}: median of {args.rounds} rounds, each side in its own process, {args.epochs} epoch(s), "
          f"batch {args.batch_size}")
    print(f"{'side':<10}{'samples/s':>11}{'accuracy':>10}{'mean acc':>10}{'peak RSS MB':>13}")
    medians = {}
    for side, results in runs.items():
        medians[side] = statistics.median(r["samples_per_s"] for r in results)
        accuracies = [r["accuracy"] for r in results]
        print(f"{side:<10}{medians[side]:>11.1f}{statistics.median(accuracies):>10.3f}"
              f"{statistics.mean(accuracies):>10.3f}{statistics.median(r['peak_rss_mb'] for r in results):>13.0f}")
    if "fp32" in medians and "bf16" in medians:
        moved = float(np.abs(runs["bf16"][-1]["vectors"] - runs["fp32"][-1]["vectors"]).max())
        print(f"bf16 / fp32: {medians['bf16'] / medians['fp32']:.2f}x (held-out probabilities differ from fp32's by "
              f"up to {moved:.3f})")
    if "plain" in runs and "augmented" in runs:
        gains = [a["accuracy"] - p["accuracy"] for a, p in zip(runs["augmented"], runs["plain"])]
        print(f"augmented - plain held-out accuracy, per round (same split): {', '.join(f'{g:+.3f}' for g in gains)}")

if __name__ == "__main__":
    main()
