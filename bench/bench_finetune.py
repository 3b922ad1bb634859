"""Finetuning speed and quality, each side in its own process, alternating rounds.

Data: Debian's fortunes labelled by their file (six categories), split into training and held-out
examples with a fixed seed. Every side trains MiniLM end to end (``strategy="full"``) for the same
steps, batch and learning rate, then predicts the held-out set; it reports training samples per
second (the timed pass only: model loading and the first batch, which warms the allocator, are not
counted), held-out accuracy and its peak memory (max RSS).

Sides (``--sides``):
  fp32, bf16, fp16
               zoo's finetune with ``precision="fp32"`` / ``"bf16"`` / ``"fp16"`` (autocast on the
               CPU; fp16 with its loss scaler): whether either is faster on this CPU, and what it
               costs in accuracy.
  zoo, trainer the same classification finetune by zoo (``backbone_lr=lr``, so one rate for every
               weight) and by ``transformers.Trainer`` with ``AutoModelForSequenceClassification`` (same
               batch, epochs, learning rate, linear schedule with 10% warmup, weight decay 0.01,
               dynamic padding to at most 256 tokens; no checkpoints for the Trainer, zoo saves one per
               epoch as it always does). Its head is BERT's pooler, zoo's a linear layer on the mean.
  trainer-grouped, zoo-ungrouped
               the Trainer with its length-grouped sampler (``train_sampling_strategy=
               "group_by_length"``), and zoo with ``group_by_length=False``: which part of the
               difference is the batching of texts by length (zoo's default, not the Trainer's).
  zoo-pairs, st-trainer
               contrastive MiniLM on (first half, second half) pairs of Debian's fortunes: zoo's
               ``objective="contrastive"`` against ``SentenceTransformerTrainer`` with
               ``MultipleNegativesRankingLoss`` (same pairs, batch, epochs, lr, 10% warmup, no
               checkpoints for the trainer); quality is held-out recall@10 of each first half
               finding its second half among the held-out second halves.
  timm-cl, timm-nchw
               the ``plain`` run's data, model, epochs and lr in a hand-written timm loop: timm's
               evaluation transform in a DataLoader with one worker, the model and batches in
               channels_last (or NCHW), AdamW; ``plain / timm-cl`` is the vision ratio.
  timm-floor   the channels_last loop with every image transformed once before the clock and
               batches cut from memory: only forward, backward and the optimizer step are timed,
               the arithmetic every trainer of this model pays; ``timm-floor / timm-cl`` bounds
               what any trainer could reach against the loop on this machine.
  plain, augmented
               EfficientNet-Lite0 finetuned end to end on scikit-image's ``lfw_subset`` (faces and
               non-faces, 25x25 grey crops upscaled to 64 px; 120 training, 80 held out, a
               stratified split per round's seed), without augmentation and with the weights' own
               train-time transform (``augment="weights"``); ``--epochs`` epochs, lr 1e-3.

    python bench/bench_finetune.py [--train 1200] [--test 600] [--epochs 1] [--batch-size 32] [--rounds 3]
    python bench/bench_finetune.py --sides zoo,trainer --lr 1e-4 --rounds 3
    python bench/bench_finetune.py --sides plain,augmented --epochs 10 --batch-size 16 --rounds 3
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
from bench_inputs import minilm_dir
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


def zoo_side(args: argparse.Namespace, precision: str, **extra: float | bool) -> tuple[np.ndarray, dict[str, float]]:
    import zoo

    train, test = labelled(args.train, args.test, args.seed)
    model = zoo.load("minilm-l6", device="cpu")
    options = {"strategy": "full", "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
               "progress": False, "precision": precision, **extra}
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


def zoo_same_rate_side(args: argparse.Namespace) -> tuple[np.ndarray, dict[str, float]]:
    """zoo's finetune at one learning rate for head and backbone, as the Trainer trains."""
    return zoo_side(args, "fp32", backbone_lr=args.lr)


def trainer_side(args: argparse.Namespace, grouped: bool = False) -> tuple[np.ndarray, dict[str, float]]:
    """``transformers.Trainer`` at its defaults, or with its length-grouped sampler
    (``train_sampling_strategy="group_by_length"``, once ``group_by_length=True``), zoo's default."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    train, test = labelled(args.train, args.test, args.seed)
    classes = sorted({c for _, c in train})
    folder = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = [{**tokenizer(t, truncation=True, max_length=256), "labels": classes.index(c)} for t, c in train]

    def train_on(rows: list[dict], out: Path) -> torch.nn.Module:
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=len(classes))
        settings = TrainingArguments(output_dir=str(out), per_device_train_batch_size=args.batch_size,
                                     num_train_epochs=args.epochs, learning_rate=args.lr, warmup_steps=0.1,
                                     weight_decay=0.01, lr_scheduler_type="linear", save_strategy="no",
                                     logging_strategy="no", report_to=[], seed=args.seed, use_cpu=True,
                                     disable_tqdm=True,
                                     **({"train_sampling_strategy": "group_by_length"} if grouped else {}))
        collator = DataCollatorWithPadding(tokenizer)
        Trainer(model=model, args=settings, train_dataset=rows, data_collator=collator).train()
        return model

    with tempfile.TemporaryDirectory() as tmp:
        train_on(rows[:args.batch_size], Path(tmp) / "warm")  # warm-up, as the zoo side does
        began = time.perf_counter()
        model = train_on(rows, Path(tmp) / "run")
        seconds = time.perf_counter() - began
    model.eval()
    probs = []
    with torch.inference_mode():
        for start in range(0, len(test), 64):
            batch = tokenizer([t for t, _ in test[start:start + 64]], truncation=True, max_length=256, padding=True,
                              return_tensors="pt")
            probs.append(torch.softmax(model(**batch).logits, -1))
    p = torch.cat(probs).numpy()
    accuracy = float(np.mean([classes[i] == c for i, (_, c) in zip(p.argmax(1), test)]))
    return p, {"samples_per_s": args.epochs * len(train) / seconds, "accuracy": accuracy,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def halves(n_train: int, n_test: int, seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(first half, second half) of distinct fortunes of 12 to 80 words, shuffled and split."""
    from bench_inputs import fortunes

    quotes = list(dict.fromkeys(" ".join(q.split()) for q in fortunes(20_000)))
    pairs = [(" ".join(w[:len(w) // 2]), " ".join(w[len(w) // 2:])) for w in (q.split() for q in quotes)
             if 12 <= len(w) <= 80]
    random.Random(seed).shuffle(pairs)
    return pairs[:n_train], pairs[n_train:n_train + n_test]


def _recall_at_10(queries: np.ndarray, passages: np.ndarray) -> float:
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    p = passages / np.linalg.norm(passages, axis=1, keepdims=True)
    scores = q @ p.T
    return float(np.mean((scores > np.diag(scores)[:, None]).sum(1) < 10))


def zoo_pairs_side(args: argparse.Namespace) -> tuple[np.ndarray, dict[str, float]]:
    import zoo

    train, test = halves(args.train, args.test, args.seed)
    model = zoo.load("minilm-l6", device="cpu")
    options = {"objective": "contrastive", "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
               "progress": False}
    with tempfile.TemporaryDirectory() as tmp:
        model.finetune(train[:args.batch_size], epochs=1, output_dir=Path(tmp) / "warm", **options)
        began = time.perf_counter()
        run = model.finetune(train, epochs=args.epochs, output_dir=Path(tmp) / "run", **options)
        seconds = time.perf_counter() - began
        queries = run.model.featurize([a for a, _ in test], progress=False)
        passages = run.model.featurize([p for _, p in test], progress=False)
    return queries, {"samples_per_s": args.epochs * len(train) / seconds, "accuracy": _recall_at_10(queries, passages),
                     "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def st_trainer_side(args: argparse.Namespace) -> tuple[np.ndarray, dict[str, float]]:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    train, test = halves(args.train, args.test, args.seed)
    folder = minilm_dir()

    def train_on(pairs: list[tuple[str, str]], out: Path) -> SentenceTransformer:
        model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        data = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
        settings = SentenceTransformerTrainingArguments(
            output_dir=str(out), per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
            learning_rate=args.lr, warmup_steps=0.1, weight_decay=0.01, lr_scheduler_type="linear",
            save_strategy="no", logging_strategy="no", report_to=[], seed=args.seed, use_cpu=True, disable_tqdm=True)
        SentenceTransformerTrainer(model=model, args=settings, train_dataset=data,
                                   loss=MultipleNegativesRankingLoss(model)).train()
        return model

    with tempfile.TemporaryDirectory() as tmp:
        train_on(train[:args.batch_size], Path(tmp) / "warm")
        began = time.perf_counter()
        model = train_on(train, Path(tmp) / "run")
        seconds = time.perf_counter() - began
    queries = model.encode([a for a, _ in test], batch_size=32)
    passages = model.encode([p for _, p in test], batch_size=32)
    return queries, {"samples_per_s": args.epochs * len(train) / seconds, "accuracy": _recall_at_10(queries, passages),
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


def timm_side(args: argparse.Namespace, channels_last: bool, floor: bool = False) -> tuple[np.ndarray, dict[str, float]]:
    """The careful user's loop: the same timm EfficientNet-Lite0 weights with a new 2-class head,
    timm's evaluation transform of its data config in a DataLoader (one worker), AdamW at lr 1e-3,
    the model and each batch in channels_last (or NCHW). ``floor``: every image transformed once
    before the clock starts and batches cut from memory, so only the model's forward, backward and
    optimizer step are timed: what any trainer of this model pays on this machine."""
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    import zoo

    train, y_train, test, y_test = faces(args.seed + args.round)
    model = zoo.load("efficientnet-lite0", device="cpu").model
    model.reset_classifier(2)
    transform = create_transform(**resolve_data_config({}, model=model))
    classes = sorted(set(y_train))
    dataset = [(x, classes.index(y)) for x, y in zip(train, y_train)]
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=1,
                                         collate_fn=lambda batch: (torch.stack([transform(Image.fromarray(x))
                                                                                for x, _ in batch]),
                                                                   torch.tensor([y for _, y in batch])))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if floor:
        pixels = torch.stack([transform(Image.fromarray(x)) for x, _ in dataset])
        labels = torch.tensor([y for _, y in dataset])
        loader = [(pixels[rows], labels[rows]) for rows in torch.randperm(len(dataset)).split(args.batch_size)]
    began = time.perf_counter()
    for _ in range(args.epochs):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x.to(memory_format=fmt)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - began
    model.eval()
    with torch.inference_mode():
        probs = torch.softmax(model(torch.stack([transform(Image.fromarray(x)) for x in test]).to(memory_format=fmt)),
                              -1).numpy()
    return probs, {"samples_per_s": args.epochs * len(train) / seconds,
                   "accuracy": float(np.mean([classes[i] == y for i, y in zip(probs.argmax(1), y_test)])),
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


SIDES = {"fp32": lambda a: zoo_side(a, "fp32"), "bf16": lambda a: zoo_side(a, "bf16"),
         "fp16": lambda a: zoo_side(a, "fp16"),
         "zoo": zoo_same_rate_side, "trainer": trainer_side, "trainer-grouped": lambda a: trainer_side(a, True),
         "zoo-ungrouped": lambda a: zoo_side(a, "fp32", backbone_lr=a.lr, group_by_length=False),
         "zoo-pairs": zoo_pairs_side,
         "st-trainer": st_trainer_side,
         "plain": lambda a: vision_side(a, None), "augmented": lambda a: vision_side(a, "weights"),
         "timm-cl": lambda a: timm_side(a, True), "timm-nchw": lambda a: timm_side(a, False),
         "timm-floor": lambda a: timm_side(a, True, floor=True)}


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
    print(f"{'side':<16}{'samples/s':>11}{'accuracy':>10}{'mean acc':>10}{'peak RSS MB':>13}")
    medians = {}
    for side, results in runs.items():
        medians[side] = statistics.median(r["samples_per_s"] for r in results)
        accuracies = [r["accuracy"] for r in results]
        print(f"{side:<16}{medians[side]:>11.1f}{statistics.median(accuracies):>10.3f}"
              f"{statistics.mean(accuracies):>10.3f}{statistics.median(r['peak_rss_mb'] for r in results):>13.0f}")
    for mixed in ("bf16", "fp16"):
        if "fp32" in medians and mixed in medians:
            moved = float(np.abs(runs[mixed][-1]["vectors"] - runs["fp32"][-1]["vectors"]).max())
            print(f"{mixed} / fp32: {medians[mixed] / medians['fp32']:.2f}x (held-out probabilities differ from "
                  f"fp32's by up to {moved:.3f})")
    for ours, theirs in (("zoo", "trainer"), ("zoo", "trainer-grouped"), ("zoo-ungrouped", "trainer"),
                         ("zoo-pairs", "st-trainer"), ("plain", "timm-cl"), ("plain", "timm-nchw")):
        if ours in medians and theirs in medians:
            print(f"{ours} / {theirs}: {medians[ours] / medians[theirs]:.2f}x training samples per second")
    if "plain" in runs and "augmented" in runs:
        gains = [a["accuracy"] - p["accuracy"] for a, p in zip(runs["augmented"], runs["plain"])]
        print(f"augmented - plain held-out accuracy, per round (same split): {', '.join(f'{g:+.3f}' for g in gains)}")

if __name__ == "__main__":
    main()
