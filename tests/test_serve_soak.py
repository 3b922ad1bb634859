"""`zoo serve` under load, with poison: 200 concurrent clients for 30 s against a real server
(minilm-l6 on the CPU, a subprocess on a loopback port) while one more client sends a request
holding a bad item every second.

Every good request must get exactly its own rows (featurize of the same texts in this process,
within 1e-5: passes of other shapes round differently), every poisoned one a 400 naming
``input[1]``, the server's resident memory (VmRSS of its process) must stay under
``RSS_BOUND_MIB``, and ``/metrics`` must count the refusals by kind. On the 2-core machine the
suite runs on (client and server sharing it), 200 clients sent 3,200 to 3,900 requests in 30 s
(about 100 a second, 2 texts each on average), the last answered 1.5 to 6 s later; the server's
RSS went from 979 to 1018 MiB (the figures are printed on each run).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from test_serve import Server  # noqa: E402  # the same subprocess server, started and stopped the same way

pytestmark = [pytest.mark.allow_hosts(["127.0.0.1"]), pytest.mark.slow]

CLIENTS = 200
SECONDS = 30.0
# The served process holds Python, torch and one small model (about 0.5-0.7 GiB measured); 200
# clients add their requests' bodies and rows. More than this means something is kept per request.
RSS_BOUND_MIB = 1536
MAX_TEXT_CHARS = 2000
WORDS = ["the", "cat", "sat", "on", "a", "mat", "while", "markets", "fell", "and", "a", "guitar", "played", "softly",
         "in", "the", "rain"]
# Short texts of several lengths (passes pad to their longest): the load is requests, not tokens.
POOL = [f"sentence {i}: " + " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1 + i % 12)) for i in range(256)]
# What the poisoning client sends beside a good text, in turn: (error kind, item, word of the message).
POISONS = [("bad_input", "broken \ud800 text", "not valid Unicode"),
           ("too_long", "x" * (MAX_TEXT_CHARS + 1), "--max-text-chars"),
           ("invalid_request", "data:application/pdf;base64,AAAA", "no modality of this server takes")]


@dataclass
class Tally:
    good: int = 0
    poisoned: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)


def _body(inputs: list[str]) -> bytes:
    # ASCII JSON, \uXXXX escapes: it carries the lone surrogate, as many clients send it.
    return json.dumps({"model": "minilm-l6", "input": inputs}).encode()


async def _good_client(client: httpx.AsyncClient, number: int, deadline: float, expected: np.ndarray,
                       tally: Tally) -> None:
    """Requests of 1-3 texts of the pool, one after another until ``deadline``; each answer checked."""
    rng = np.random.default_rng(number)
    while time.monotonic() < deadline:
        picks = rng.choice(len(POOL), size=int(rng.integers(1, 4)), replace=False)
        reply = await client.post("/v1/embeddings", content=_body([POOL[i] for i in picks]))
        tally.good += 1
        if reply.status_code != 200:
            tally.failures.append(f"client {number}: {reply.status_code} {reply.text[:300]}")
            continue
        rows = np.array([d["embedding"] for d in reply.json()["data"]], dtype=np.float32)
        if rows.shape != (len(picks), expected.shape[1]) or not np.allclose(rows, expected[picks], atol=1e-5):
            worst = np.abs(rows - expected[picks]).max() if rows.shape == expected[picks].shape else rows.shape
            tally.failures.append(f"client {number}: rows not its own texts' (off by {worst})")


async def _poison(client: httpx.AsyncClient, k: int, tally: Tally) -> None:
    kind, item, word = POISONS[k % len(POISONS)]
    reply = await client.post("/v1/embeddings", content=_body([POOL[k], item]))
    error = reply.json().get("error") or {}
    if reply.status_code == 400 and error.get("param") == "input[1]" and word in error.get("message", ""):
        tally.poisoned[kind] += 1
    else:
        tally.failures.append(f"poison {kind}: {reply.status_code} {reply.text[:300]}")


async def _poisoner(client: httpx.AsyncClient, began: float, tally: Tally) -> None:
    """One poisoned request every second, on the second, whatever the last one's latency."""
    sent = []
    for k in range(int(SECONDS)):
        await asyncio.sleep(max(0.0, began + k - time.monotonic()))
        sent.append(asyncio.create_task(_poison(client, k, tally)))
    await asyncio.gather(*sent)


async def _watch_rss(pid: int, deadline: float, tally: Tally) -> None:
    status = Path(f"/proc/{pid}/status")
    while time.monotonic() < deadline:
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS:"))
        tally.rss_kib.append(int(line.split()[1]))
        await asyncio.sleep(0.25)


async def _soak(url: str, pid: int, expected: np.ndarray) -> Tally:
    tally = Tally()
    limits = httpx.Limits(max_connections=CLIENTS + 16, max_keepalive_connections=CLIENTS + 16)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60,
                                 headers={"content-type": "application/json"}) as client:
        began = time.monotonic()
        deadline = began + SECONDS
        await asyncio.gather(*(_good_client(client, n, deadline, expected, tally) for n in range(CLIENTS)),
                             _poisoner(client, began, tally), _watch_rss(pid, deadline, tally))
    return tally


def _metric(text: str, name: str) -> float:
    found = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def test_200_clients_for_30_s_each_get_their_own_rows_beside_a_poisoned_request_every_second(minilm, capsys):
    expected = minilm.featurize(POOL, batch_size=32)
    srv = Server("minilm-l6", extra=("--max-text-chars", str(MAX_TEXT_CHARS)))
    try:
        assert srv.embed("minilm-l6", POOL[:3]).status_code == 200  # warm: the first pass allocates
        began = time.monotonic()
        tally = asyncio.run(_soak(srv.url, srv.proc.pid, expected))
        took = time.monotonic() - began
        metrics = httpx.get(f"{srv.url}/metrics", timeout=10).text
        assert httpx.get(f"{srv.url}/health", timeout=10).status_code == 200
    finally:
        srv.stop()
    assert not tally.failures, f"{len(tally.failures)} failed, first: {tally.failures[:5]}"
    assert sum(tally.poisoned.values()) == int(SECONDS)
    for kind, count in tally.poisoned.items():
        assert _metric(metrics, f'zoo_request_errors_total{{kind="{kind}"}}') == count, (kind, metrics)
    assert _metric(metrics, 'zoo_requests_total{path="/v1/embeddings",status="200"}') == tally.good + 1
    peak = max(tally.rss_kib) / 1024
    assert peak < RSS_BOUND_MIB, f"the server's RSS reached {peak:.0f} MiB"
    with capsys.disabled():
        print(f"\nsoak: {CLIENTS} clients sending for {SECONDS:.0f} s, all answered after {took:.1f} s: "
              f"{tally.good} good requests ({tally.good / took:.0f}/s), {sum(tally.poisoned.values())} poisoned "
              f"{dict(tally.poisoned)}; "
              f"server RSS {tally.rss_kib[0] / 1024:.0f} MiB at the start, peak {peak:.0f} (bound {RSS_BOUND_MIB})")
