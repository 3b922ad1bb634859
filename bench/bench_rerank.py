"""zoo's reranker (``model.score``) against sentence-transformers' ``CrossEncoder.predict`` on the
same folder, pairs and batch size.

The reranker is MiniLM-L6 with a new one-label head (``CrossEncoder(minilm folder, num_labels=1)``,
saved once): the architecture and size of ``cross-encoder/ms-marco-MiniLM-L6-v2``, whose trained
weights are not on this machine, so its speed is that model's and its scores are meaningless.
The pairs are real text: each of ``--queries`` Debian fortunes against ``--candidates`` others, as
a search's reranking stage sees them.

Sides, each in its own interpreter (see ``sides.py``), alternating, ``--rounds`` rounds, each after
a warm-up on 64 pairs:

- ``zoo``: ``zoo.load(folder).score(pairs)``: pairs batched longest first by token count.
- ``st``: ``CrossEncoder(folder).predict(pairs)``: sorted by characters.

Prints each side's median pairs per second, the ratio, and the largest score difference.

    python bench/bench_rerank.py [--queries 20] [--candidates 100] [--rounds 3] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import bench_inputs
import numpy as np
from sides import alternate, child, side_arguments


def reranker_folder(root: Path) -> Path:
    """MiniLM-L6's real body with a seeded one-label head, saved by ``CrossEncoder.save``."""
    import torch
    from sentence_transformers import CrossEncoder

    minilm = bench_inputs.minilm_dir()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CrossEncoder(str(minilm), num_labels=1, max_length=256, device="cpu").save(str(root), create_model_card=False)
    return root


def pairs(queries: int, candidates: int) -> list[tuple[str, str]]:
    texts = bench_inputs.fortunes(queries * (candidates + 1))
    return [(texts[q], texts[queries + (q * candidates + c) % (len(texts) - queries)])
            for q in range(queries) for c in range(candidates)]


def _timed(score: Any, items: list[tuple[str, str]]) -> tuple[np.ndarray, dict[str, Any]]:
    score(items[:64])
    began = time.perf_counter()
    scores = score(items)
    return np.asarray(scores, dtype=np.float32).reshape(-1, 1), {"seconds": time.perf_counter() - began}


def zoo_side(folder: str, items: list[tuple[str, str]], batch_size: int) -> Any:
    import zoo

    model = zoo.load(folder, device="cpu")
    return _timed(lambda p: model.score(p, batch_size=batch_size, progress=False), items)


def st_side(folder: str, items: list[tuple[str, str]], batch_size: int) -> Any:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(folder, device="cpu", local_files_only=True)
    return _timed(lambda p: model.predict(p, batch_size=batch_size, show_progress_bar=False), items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=100)
    side_arguments(parser)
    args = parser.parse_args()
    if args.side:
        items = pairs(args.queries, args.candidates)
        side = {"zoo": zoo_side, "st": st_side}[args.side]
        child(args.side, args.vectors, {args.side: lambda: side(args.folder, items, args.batch_size)})
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(reranker_folder(Path(tmp) / "reranker"))
        argv = ["--queries", str(args.queries), "--candidates", str(args.candidates), "--batch-size",
                str(args.batch_size), "--folder", folder]
        runs = alternate(__file__, ["zoo", "st"], argv, args.rounds)
    n = args.queries * args.candidates
    speed = {side: statistics.median(n / r["seconds"] for r in results) for side, results in runs.items()}
    for side, results in runs.items():
        each = ", ".join(f"{n / r['seconds']:.1f}" for r in results)
        print(f"{side:>4}: {speed[side]:7.1f} pairs/s (median of {len(results)}: {each})")
    gap = float(np.abs(runs["zoo"][0]["vectors"] - runs["st"][0]["vectors"]).max())
    print(f"zoo / st: {speed['zoo'] / speed['st']:.2f}x pairs per second; largest score difference {gap:.2e} "
          f"({n} pairs, batch {args.batch_size})")
    print(json.dumps({"pairs_per_s": speed, "max_abs_diff": gap}))


if __name__ == "__main__":
    main()
