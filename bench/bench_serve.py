"""`zoo serve` under 64 concurrent clients against offline featurize, on the same MiniLM and texts.

Three sides, each in its own interpreter (see ``sides.py``), alternating, several rounds:

- ``offline``: ``featurize(texts)`` in process (batch 32, all texts sorted by length).
- ``gathered``: in process, ``featurize`` on consecutive sets of 64 texts, each sorted and run in
  passes of 32: the most a server can make of 64 clients with one text in flight each, since
  it never holds more than 64 texts to sort (the rest of the gap to ``offline`` is padding).
- ``batched``: ``zoo serve minilm-l6`` with its defaults (``--max-batch 64 --max-wait-ms 5
  --batch-size 32``) on loopback; 64 clients (one asyncio task each) send one text per request,
  each its next as soon as it has an answer, asking for base64 as the openai client does.
- ``unbatched``: the same server with ``--max-batch 1``: one forward pass per request.

The clients share the machine with the server. They use aiohttp (``pip install aiohttp``):
httpx's connection pool took about 13 ms of client CPU per request at 64 connections here,
which on a small machine would measure the client more than the server. Prints median
throughput, the serving share of offline throughput, p50 / p99 request latency, the batched /
unbatched ratio and the lowest per-row cosine between served and offline rows.

    python bench/bench_serve.py [--n 2048] [--rounds 3] [--corpus short_texts|fortunes|synthetic]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench_inputs
import numpy as np
from sides import alternate, child, min_cosine

CLIENTS = 64
MAX_BATCH = {"batched": 64, "unbatched": 1}


def offline_side(texts: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    import zoo

    model = zoo.load("minilm-l6", device="cpu")
    model.featurize(texts[:CLIENTS], progress=False)
    began = time.perf_counter()
    vectors = model.featurize(texts, progress=False)
    return vectors, {"seconds": time.perf_counter() - began}


def gathered_side(texts: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    import zoo

    model = zoo.load("minilm-l6", device="cpu")
    model.featurize(texts[:CLIENTS], progress=False)
    began = time.perf_counter()
    vectors = np.concatenate([model.featurize(texts[i:i + CLIENTS], progress=False)
                              for i in range(0, len(texts), CLIENTS)])
    return vectors, {"seconds": time.perf_counter() - began}


def served_side(texts: list[str], max_batch: int) -> tuple[np.ndarray, dict[str, Any]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "zoo", "serve", "minilm-l6", "--port", str(port),
                               "--device", "cpu", "--max-batch", str(max_batch), "--max-wait-ms", "5",
                               "--log-level", "warning", "--stop-after", "900"])
    try:
        return asyncio.run(_clients(f"http://127.0.0.1:{port}", texts))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


async def _clients(url: str, texts: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(120)) as session:
        await _wait_until_up(session)
        await _run_clients(session, texts[:CLIENTS * 2], {}, [])  # warm-up: connections, first passes
        rows: dict[int, np.ndarray] = {}
        latencies: list[float] = []
        began = time.perf_counter()
        await _run_clients(session, texts, rows, latencies)
        seconds = time.perf_counter() - began
    return np.stack([rows[i] for i in range(len(texts))]), {"seconds": seconds, "latencies": latencies}


async def _wait_until_up(session: Any, within: float = 120) -> None:
    import aiohttp

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            async with session.get("/health") as reply:
                if reply.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.2)
    raise SystemExit(f"zoo serve did not answer /health within {within:.0f} s")


async def _run_clients(session: Any, texts: list[str], rows: dict[int, np.ndarray], latencies: list[float]) -> None:
    """``CLIENTS`` clients, each sending one text per request until every text is embedded."""
    todo = iter(range(len(texts)))

    async def one_client() -> None:
        for i in todo:  # a shared iterator: each index goes to exactly one client
            began = time.perf_counter()
            body = {"model": "minilm-l6", "input": texts[i], "encoding_format": "base64"}
            async with session.post("/v1/embeddings", json=body) as reply:
                reply.raise_for_status()
                data = await reply.json()
            latencies.append(time.perf_counter() - began)
            rows[i] = np.frombuffer(base64.b64decode(data["data"][0]["embedding"]), dtype="<f4")

    await asyncio.gather(*(one_client() for _ in range(CLIENTS)))


def _percentile_ms(runs: list[dict[str, Any]], q: float) -> float:
    """The median over rounds of each round's ``q`` latency percentile, in milliseconds."""
    return statistics.median(float(np.percentile(r["latencies"], q)) for r in runs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--corpus", default="short_texts", choices=["short_texts", "fortunes", "synthetic"])
    parser.add_argument("--side", choices=["offline", "gathered", *MAX_BATCH], help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    texts = getattr(bench_inputs, args.corpus)(args.n)
    if args.side:
        sides = {"offline": lambda: offline_side(texts), "gathered": lambda: gathered_side(texts)}
        sides.update({side: (lambda b=b: served_side(texts, b)) for side, b in MAX_BATCH.items()})
        child(args.side, args.vectors, sides)
        return
    print(f"MiniLM-L6, {args.n} {args.corpus} texts, {CLIENTS} concurrent clients of one text per request, "
          f"each side in its own process, median of {args.rounds} rounds")
    runs = alternate(__file__, ["offline", "gathered", "batched", "unbatched"],
                     ["--n", str(args.n), "--corpus", args.corpus], args.rounds)
    rate = {side: args.n / statistics.median(r["seconds"] for r in rs) for side, rs in runs.items()}
    print(f"  offline featurize (batch 32):     {rate['offline']:7.1f} texts/s")
    print(f"  featurize on sets of {CLIENTS} texts:    {rate['gathered']:7.1f} texts/s  "
          f"({rate['gathered'] / rate['offline']:.0%} of offline: what {CLIENTS} single-text clients allow)")
    for side in MAX_BATCH:
        print(f"  zoo serve, --max-batch {MAX_BATCH[side]:<3}:       {rate[side]:7.1f} texts/s  "
              f"({rate[side] / rate['offline']:.0%} of offline)   latency p50 {_percentile_ms(runs[side], 50):6.1f} ms"
              f"  p99 {_percentile_ms(runs[side], 99):6.1f} ms")
    print(f"  batching on / off: {rate['batched'] / rate['unbatched']:.2f}x   "
          f"min cosine served vs offline: {min_cosine(runs['batched'][-1]['vectors'], runs['offline'][-1]['vectors']):.6f}")


if __name__ == "__main__":
    main()
