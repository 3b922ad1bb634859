"""zoo featurize on each runtime against sentence-transformers and fastembed, on the same MiniLM
weights, texts and batch size.

Sides, each in its own interpreter (see ``sides.py``), alternating, several rounds, each after a
warm-up on 64 texts:

- ``zoo``, ``zoo-onnx``, ``zoo-openvino``: ``zoo.load("minilm-l6", runtime=...)``.
- ``st``: sentence-transformers' ``encode`` (PyTorch backend) on the same folder.
- ``st-onnx``: sentence-transformers with ``backend="onnx"``: it exports the same folder with
  optimum and runs it in ONNX Runtime.
- ``fastembed``: fastembed's ``TextEmbedding`` on that same ONNX export (``specific_model_path``,
  cutting texts at the same 256 tokens); its own MiniLM download is not reachable offline, and
  this is the same weights.

The ONNX peers need optimum, which pins transformers below 4.58, so they run in a separate
environment (``--peers-python``, made by ``bench/make_peers_env.sh``); without one they are left out.

Two corpora: real text (Debian's fortunes: varied length, layout and punctuation) and synthetic
text (random words). Prints each side's median throughput, its ratio to sentence-transformers'
PyTorch backend and the lowest per-item cosine similarity against it. With ``--device cuda``:
zoo and sentence-transformers in float32 and in ``--half`` (float16 or bfloat16), the cosine
against float32.

    python bench/bench_text.py [--n 2000] [--rounds 3] [--batch-size 32] [--corpus fortunes synthetic]
                               [--sides ...] [--peers-python PATH] [--device cuda --half float16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import bench_inputs
import numpy as np
from sides import alternate, child, min_cosine

CPU_SIDES = ["zoo", "zoo-onnx", "zoo-openvino", "st", "st-onnx", "fastembed"]
PEER_SIDES = {"st-onnx", "fastembed"}
DEFAULT_PEERS = Path.home() / ".cache" / "zoo-bench-peers" / "bin" / "python"


def _timed(encode: Any, texts: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    encode(texts[:64])
    began = time.perf_counter()
    vectors = encode(texts)
    return np.asarray(vectors, dtype=np.float32), {"seconds": time.perf_counter() - began}


def zoo_side(texts: list[str], args: argparse.Namespace, runtime: str, dtype: str | None = None) -> Any:
    import zoo

    ours = zoo.load("minilm-l6", device=args.device, runtime=runtime, dtype=dtype)
    return _timed(lambda t: ours.featurize(t, batch_size=args.batch_size, progress=False), texts)


def st_side(texts: list[str], args: argparse.Namespace, backend: str = "torch", dtype: str | None = None) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer

    kwargs = {"model_kwargs": {"dtype": getattr(torch, dtype)}} if dtype else {}
    theirs = SentenceTransformer(args.folder, device=args.device, backend=backend, **kwargs)
    return _timed(lambda t: theirs.encode(t, batch_size=args.batch_size, normalize_embeddings=True,
                                          convert_to_numpy=True), texts)


def fastembed_side(texts: list[str], args: argparse.Namespace) -> Any:
    from fastembed import TextEmbedding

    folder = onnx_folder(args.folder, args.work)
    theirs = TextEmbedding("sentence-transformers/all-MiniLM-L6-v2", specific_model_path=str(folder),
                           local_files_only=True, cache_dir=str(args.work / "fastembed-cache"))
    return _timed(lambda t: list(theirs.embed(t, batch_size=args.batch_size)), texts)


def onnx_folder(source: str, work: Path) -> Path:
    """sentence-transformers' ONNX export of ``source`` laid out as fastembed reads a model folder."""
    import shutil

    from sentence_transformers import SentenceTransformer

    folder = work / "minilm-onnx-for-fastembed"
    if not (folder / "model.onnx").is_file():
        exported = work / "minilm-st-onnx"
        SentenceTransformer(source, device="cpu", backend="onnx").save_pretrained(str(exported))
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            shutil.copy(exported / name, folder / name)
        shutil.copy(exported / "onnx" / "model.onnx", folder / "model.onnx")
        # fastembed cuts texts at the stricter of tokenizer_config's model_max_length and max_length
        # (128 in this export); sentence-transformers and zoo cut at sentence_bert_config's 256,
        # what the weights were trained at: the same cut for all.
        limit = json.loads((Path(source) / "sentence_bert_config.json").read_text())["max_seq_length"]
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config.update(model_max_length=limit, max_length=limit)
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def run_child(args: argparse.Namespace) -> None:
    texts = getattr(bench_inputs, args.corpus[0])(args.n)
    half = args.half
    child(args.side, args.vectors, {
        "zoo": lambda: zoo_side(texts, args, "torch"),
        "zoo-onnx": lambda: zoo_side(texts, args, "onnx"),
        "zoo-openvino": lambda: zoo_side(texts, args, "openvino"),
        "st": lambda: st_side(texts, args),
        "st-onnx": lambda: st_side(texts, args, backend="onnx"),
        "fastembed": lambda: fastembed_side(texts, args),
        f"zoo-{half}": lambda: zoo_side(texts, args, "torch", dtype=half),
        f"st-{half}": lambda: st_side(texts, args, dtype=half),
    })


def sides_to_run(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    if args.device.startswith("cuda"):
        return args.sides or ["zoo", f"zoo-{args.half}", "st", f"st-{args.half}"], {}
    sides = args.sides or CPU_SIDES
    peers = str(args.peers_python)
    if any(side in PEER_SIDES for side in sides) and not os.access(peers, os.X_OK):
        print(f"(no peers environment at {peers}: st-onnx and fastembed left out; make it with "
              "bench/make_peers_env.sh)")
        sides = [s for s in sides if s not in PEER_SIDES]
    return sides, {side: peers for side in sides if side in PEER_SIDES}


def report(corpus: str, runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    seconds = {side: statistics.median(r["seconds"] for r in results) for side, results in runs.items()}
    reference = "st"
    print(f"[{corpus}] texts/s, median of {args.rounds}; ratio to sentence-transformers (PyTorch); "
          f"lowest cosine against it{' (float32)' if args.device.startswith('cuda') else ''}")
    for side, results in runs.items():
        cos = min_cosine(results[-1]["vectors"], runs[reference][-1]["vectors"])
        print(f"  {side:<14} {args.n / seconds[side]:8.1f} texts/s   {seconds[reference] / seconds[side]:5.2f}x"
              f"   min cosine {cos:.6f}")
    fastest_peer = min((s for s in seconds if s in PEER_SIDES), key=seconds.get, default=None)
    ours = min((s for s in seconds if s.startswith("zoo")), key=seconds.get, default=None)
    if fastest_peer and ours:
        print(f"  best zoo ({ours}) against the fastest ONNX peer ({fastest_peer}): "
              f"{seconds[fastest_peer] / seconds[ours]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--corpus", nargs="+", default=["fortunes", "synthetic"], choices=["fortunes", "synthetic"])
    parser.add_argument("--sides", nargs="+")
    parser.add_argument("--peers-python", type=Path, default=DEFAULT_PEERS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--half", default="float16", choices=["float16", "bfloat16"])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "zoo-bench-text")
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run_child(args)
        return
    from zoo.catalog._loader import locate_files, resolve

    folder = str(locate_files(resolve("minilm-l6")).root)  # the same files for every side
    args.work.mkdir(parents=True, exist_ok=True)
    sides, pythons = sides_to_run(args)
    print(f"{args.n} texts per corpus, batch size {args.batch_size}, device {args.device}, "
          f"{len(os.sched_getaffinity(0))} cores; each side in its own process")
    for corpus in args.corpus:
        argv = ["--n", str(args.n), "--batch-size", str(args.batch_size), "--corpus", corpus, "--device", args.device,
                "--half", args.half, "--work", str(args.work), "--folder", folder]
        report(corpus, alternate(__file__, sides, argv, args.rounds, pythons), args)


if __name__ == "__main__":
    main()
