"""Run each side of a comparison in its own interpreter, alternating, and collect what it measured.

A side runs in a fresh process so that it inherits nothing from the other: zoo tunes glibc's
malloc for the life of its process (see ``zoo.core._allocator``), which would otherwise speed up the
baseline measured after it. The script is called again as ``SCRIPT --side NAME ...``; the child
warms up, times one pass, saves its vectors as ``.npy`` and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def side_arguments(parser: argparse.ArgumentParser, *, rounds: int = 3, batch_size: int = 32) -> None:
    """The arguments every side-by-side script takes: ``--rounds`` and ``--batch-size``, and the
    hidden ones its children are called with (``--side``, ``--vectors``, ``--folder``)."""
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)


# One side of a retrieval comparison: (model folder, corpus texts then queries, queries, batch size)
# -> (vectors to compare, measurements).
RetrievalSide = Callable[[str, list[str], int, int], tuple[np.ndarray, dict[str, Any]]]


def retrieval_runs(script: str, description: str, sides: dict[str, RetrievalSide],
                   make_folder: Callable[[Path], Path]) -> tuple[argparse.Namespace, dict[str, list[dict[str, Any]]]]:
    """The main of a side-by-side retrieval benchmark over Debian fortunes (``--texts`` documents,
    then ``--queries`` more whose first lines are the queries). In a child: runs its side and
    exits. In the parent: builds the model folder with ``make_folder`` in a temporary folder and
    runs the sides alternately; returns the arguments and each side's results."""
    import bench_inputs

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=2000, help="corpus texts (default 2000)")
    parser.add_argument("--queries", type=int, default=200, help="queries searched (default 200)")
    side_arguments(parser)
    args = parser.parse_args()
    if args.side:
        texts = bench_inputs.fortunes(args.texts + args.queries)
        side = sides[args.side]
        child(args.side, args.vectors, {args.side: lambda: side(args.folder, texts, args.queries, args.batch_size)})
        raise SystemExit(0)
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["--texts", str(args.texts), "--queries", str(args.queries), "--batch-size", str(args.batch_size),
                "--folder", str(make_folder(Path(tmp)))]
        return args, alternate(script, list(sides), argv, args.rounds)


def run_side(script: str, side: str, argv: list[str], python: str = sys.executable) -> dict[str, Any]:
    """Run ``script --side SIDE ARGV`` in a fresh interpreter (``python``); returns its JSON line,
    with ``vectors`` loaded from the file it saved."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "vectors.npy"
        done = subprocess.run([python, script, "--side", side, "--vectors", str(out), *argv],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"side {side!r} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["vectors"] = np.load(out)
    return result


def alternate(script: str, sides: list[str], argv: list[str], rounds: int,
              pythons: dict[str, str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """``rounds`` rounds, each running every side once in turn; each side's results in round order.
    ``pythons`` names another interpreter for some sides (peers that need other library versions)."""
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for _ in range(rounds):
        for side, results in runs.items():
            results.append(run_side(script, side, argv, (pythons or {}).get(side, sys.executable)))
    return runs


def child(side: str, vectors: Path, sides: dict[str, Callable[[], tuple[np.ndarray, dict[str, Any]]]]) -> None:
    """In the child: run ``sides[side]`` (which warms up and times itself), save its vectors, print
    its measurements as one JSON line."""
    array, measured = sides[side]()
    np.save(vectors, np.asarray(array, dtype=np.float32))
    print(json.dumps(measured))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity between two ``(N, D)`` arrays."""
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The lowest per-row cosine similarity between two ``(N, D)`` arrays."""
    return float(cosines(a, b).min())
