"""Contrastive finetuning on real data: Debian's package descriptions as a retrieval set.

Every Debian machine has about 63,000 packages, each with a one-line description (the query) and
a long description (the passage), listed by ``apt-cache show`` once ``apt-get update`` has fetched
the English descriptions (``apt-cache dumpavail`` has the one-line ones only). Packages are
grouped by source package (a library's ``-dev``, ``-doc`` and runtime packages share their
descriptions) and the groups split into train and test, so that no test passage, nor a sibling's
copy of it, is seen in training. Passages that repeat another's text, and queries that repeat
another's, are dropped.

The base model and each finetuned one are scored on the same held-out queries against the same
held-out corpus: recall@10 and nDCG@10 (one relevant passage per query), with a paired bootstrap
interval of the gain over queries. The finetuned sides (``--sides``): ``full`` (every weight),
``lora`` (peft's low-rank adapters, at ``--lora-lr``) and ``mined`` (every weight, on triplets
whose negatives ``zoo.mine_negatives`` found among the training passages with the base model).
Each side runs in its own process and reports its training time, trainable parameters, the size of
the file it saved and its peak memory (max RSS).

    apt-get update -o Acquire::Languages=en
    apt-cache pkgnames | sort | xargs apt-cache -o Acquire::Languages=en show > /tmp/packages.txt
    python bench/bench_contrastive.py --packages /tmp/packages.txt [--train 4000] [--test 2000]
                                      [--epochs 1] [--batch-size 32] [--lr 2e-5] [--model minilm-l6]
                                      [--sides full,lora,mined] [--lora-lr 5e-4]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

K = 10


def read_packages(path: Path) -> list[dict[str, str]]:
    """``{package, source, query, passage}`` per package of an ``apt-cache show`` listing (a
    package listed in several versions is kept once)."""
    packages, record, field = [], {}, None
    for line in [*path.read_text(encoding="utf-8", errors="replace").splitlines(), ""]:
        if not line:
            if "Package" in record and "Description" in record:
                packages.append(record)
            record, field = {}, None
        elif line.startswith(" ") and field == "Description":
            text = line.strip()
            record["Long"] = record.get("Long", "") + ("\n" if text == "." else " " + text)
        elif ":" in line and not line.startswith(" "):
            field, _, value = line.partition(":")
            field = "Description" if field in ("Description", "Description-en") else field
            record[field] = value.strip()
    out, seen = [], set()
    for r in packages:
        if r["Package"] in seen:
            continue
        seen.add(r["Package"])
        source = r.get("Source", r["Package"]).split()[0]
        out.append({"package": r["Package"], "source": source, "query": r["Description"],
                    "passage": " ".join(r.get("Long", "").split())})
    return out


def split(packages: list[dict[str, str]], n_train: int, n_test: int, seed: int) -> tuple[list, list]:
    """(train pairs, test pairs): source groups split at random; repeated texts dropped."""
    seen_query, seen_passage, kept = set(), set(), {}
    for p in packages:
        words = len(p["passage"].split())
        if len(p["query"].split()) < 3 or words < 15 or p["passage"] in seen_passage or p["query"] in seen_query:
            continue
        seen_query.add(p["query"])
        seen_passage.add(p["passage"])
        kept.setdefault(p["source"], []).append(p)
    groups = sorted(kept)
    random.Random(seed).shuffle(groups)
    test = [p for g in groups[: len(groups) // 5] for p in kept[g]]
    train = [p for g in groups[len(groups) // 5:] for p in kept[g]]
    rng = random.Random(seed + 1)
    return rng.sample(train, min(n_train, len(train))), rng.sample(test, min(n_test, len(test)))


def _truncate(text: str, words: int = 120) -> str:
    return " ".join(text.split()[:words])


def side(args: argparse.Namespace) -> None:
    """One side, in its own process: finetune (or not), then rank the test corpus for each query."""
    import resource

    import numpy as np

    import zoo

    data = json.loads(Path(args.data).read_text())
    model = zoo.load(args.model, device="cpu")
    report: dict[str, float] = {}
    if args.side != "base":
        began = time.perf_counter()
        pairs = [(p["query"], _truncate(p["passage"])) for p in data["train"]]
        options = {"strategy": "lora", "lr": args.lora_lr} if args.side == "lora" else {"lr": args.lr}
        if args.side == "mined":
            mined = zoo.mine_negatives(model, pairs, num_negatives=1, relative_margin=0.05, progress=False)
            report["mined_triplets"] = len(mined)
            pairs = list(zip(mined.triplets.anchors, mined.triplets.positives, mined.triplets.negatives or []))
        run = model.finetune(pairs, objective="contrastive", output_dir=args.out, epochs=args.epochs,
                             batch_size=args.batch_size, seed=args.seed, progress=False, **options)
        report["train_seconds"] = time.perf_counter() - began
        saved = json.loads((Path(args.out) / "zoo.json").read_text())["backbone"]["file"]
        report["saved_mb"] = (Path(args.out) / saved).stat().st_size / 2**20
        report["trainable"] = sum(p.numel() for n, p in run.model.model.named_parameters()) \
            if args.side != "lora" else _adapter_size(Path(args.out) / saved)
        model = zoo.load(args.out, device="cpu")
        print(f"{args.side}: trained on {len(pairs)} examples: {run.history}", file=sys.stderr)
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queries = model.featurize([p["query"] for p in data["test"]], batch_size=64, progress=False)
    corpus = model.featurize([_truncate(p["passage"]) for p in data["test"]], batch_size=64, progress=False)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    scores = queries @ corpus.T
    ranks = (scores > np.diag(scores)[:, None]).sum(1)  # 0: the query's own passage comes first
    Path(args.ranks).write_text(json.dumps({"ranks": ranks.tolist(), "report": report}))


def _adapter_size(path: Path) -> int:
    """How many numbers a saved LoRA adapter holds (its trainable parameters)."""
    from safetensors.torch import load_file

    return sum(t.numel() for t in load_file(str(path)).values())


def metrics(ranks: list[int]) -> tuple[list[float], list[float]]:
    """Per query: recall@10 (0 or 1) and nDCG@10 (one relevant passage: 1 / log2(rank + 2))."""
    import math

    recall = [1.0 if r < K else 0.0 for r in ranks]
    ndcg = [1 / math.log2(r + 2) if r < K else 0.0 for r in ranks]
    return recall, ndcg


def bootstrap(before: list[float], after: list[float], seed: int, rounds: int = 2000) -> tuple[float, float]:
    """95% interval of the mean gain, resampling queries (paired)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    gain = np.asarray(after) - np.asarray(before)
    means = [gain[rng.integers(0, len(gain), len(gain))].mean() for _ in range(rounds)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=Path, required=True)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sides", default="full", help="finetuned sides, of full, lora, mined (default full)")
    parser.add_argument("--lora-lr", type=float, default=5e-4)
    parser.add_argument("--side", choices=["base", "full", "lora", "mined"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--ranks", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side(args)
        return
    packages = read_packages(args.packages)
    train, test = split(packages, args.train, args.test, args.seed)
    print(f"{len(packages)} packages; {len(train)} training pairs, {len(test)} held-out queries against "
          f"{len(test)} held-out passages (split by source package)")
    work = Path(tempfile.mkdtemp(prefix="zoo-bench-contrastive-"))
    (work / "data.json").write_text(json.dumps({"train": train, "test": test}))
    sides = ["base", *[s.strip() for s in args.sides.split(",") if s.strip()]]
    results, reports = {}, {}
    for name in sides:
        ranks = work / f"{name}.json"
        cmd = [sys.executable, __file__, "--packages", str(args.packages), "--side", name, "--data",
               str(work / "data.json"), "--ranks", str(ranks), "--out", str(work / name), "--model", args.model,
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
               "--lora-lr", str(args.lora_lr), "--seed", str(args.seed)]
        subprocess.run(cmd, check=True)
        out = json.loads(ranks.read_text())
        results[name], reports[name] = metrics(out["ranks"]), out["report"]
    print(f"\n{args.model}, {args.epochs} epoch(s), batch {args.batch_size}, lr {args.lr} (lora {args.lora_lr})")
    print(f"{'side':<7}{'metric':<11}{'base':>8}{'tuned':>8}{'gain':>8}   95% interval of the gain")
    for side_name in sides[1:]:
        for i, name in enumerate(("recall@10", "nDCG@10")):
            before, after = results["base"][i], results[side_name][i]
            low, high = bootstrap(before, after, args.seed)
            mean_b, mean_a = sum(before) / len(before), sum(after) / len(after)
            print(f"{side_name:<7}{name:<11}{mean_b:>8.4f}{mean_a:>8.4f}{mean_a - mean_b:>+8.4f}   "
                  f"[{low:+.4f}, {high:+.4f}]")
    print(f"\n{'side':<7}{'train s':>9}{'trainable':>12}{'saved MB':>10}{'peak RSS MB':>13}")
    for name in sides:
        r = reports[name]
        print(f"{name:<7}{r.get('train_seconds', 0):>9.0f}{int(r.get('trainable', 0)):>12,}"
              f"{r.get('saved_mb', 0):>10.2f}{r['peak_rss_mb']:>13.0f}"
              + (f"   ({int(r['mined_triplets'])} mined triplets)" if "mined_triplets" in r else ""))


if __name__ == "__main__":
    main()
