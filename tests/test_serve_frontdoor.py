"""What every request to ``zoo serve`` passes: the API key (OpenAI's 401), its id, one JSON
access-log line, Prometheus metrics, a bounded queue (429 with Retry-After) and a body deadline
(408). In-process, through Starlette's test client; the server itself is tested in test_serve.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")

from starlette.testclient import TestClient  # noqa: E402

from zoo.serve._app import RequestError, _read_body, create_app  # noqa: E402

KEY = "sk-zoo-test-0123456789"


def _metric(client, line_start: str, headers=None) -> float:
    text = client.get("/metrics", headers=headers or {}).text
    found = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def test_the_api_key_is_asked_of_every_request_but_health(minilm):
    with TestClient(create_app({"minilm-l6": minilm}, api_key=KEY)) as client:
        body = {"model": "minilm-l6", "input": ["a text"]}
        for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": KEY}):
            refused = client.post("/v1/embeddings", json=body, headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
            error = refused.json()["error"]
            assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
            assert KEY not in refused.text and "sk-wrong" not in refused.text
        assert client.get("/v1/models").status_code == 401 and client.get("/metrics").status_code == 401
        assert client.get("/health").status_code == 200
        good = {"Authorization": f"Bearer {KEY}"}
        assert client.post("/v1/embeddings", json=body, headers=good).status_code == 200
        assert _metric(client, 'zoo_request_errors_total{kind="invalid_api_key"}', good) == 5


def test_every_answer_carries_a_request_id_and_one_access_log_line(minilm, caplog):
    with TestClient(create_app({"minilm-l6": minilm})) as client, \
            caplog.at_level(logging.INFO, logger="zoo.serve.access"):
        made = client.post("/v1/embeddings", json={"model": "minilm-l6", "input": ["one", "two"]})
        kept = client.post("/v1/embeddings", json={"model": "minilm-l6", "input": "x"},
                           headers={"X-Request-Id": "client-7:a.b"})
        replaced = client.post("/v1/embeddings", json={"model": "nope", "input": "x"},
                               headers={"X-Request-Id": "bad id {}"})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert kept.headers["x-request-id"] == "client-7:a.b"
    assert replaced.status_code == 404 and re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "zoo.serve.access"]
    assert [(x["status"], x["model"], x["inputs"]) for x in lines] == [(200, "minilm-l6", 2), (200, "minilm-l6", 1),
                                                                      (404, None, None)]
    assert lines[0]["request_id"] == made.headers["x-request-id"] and lines[2]["error"] == "model_not_found"
    assert all(x["method"] == "POST" and x["ms"] >= 0 for x in lines)


def test_metrics_count_requests_inputs_and_errors_by_kind(minilm):
    with TestClient(create_app({"minilm-l6": minilm})) as client:
        client.post("/v1/embeddings", json={"model": "minilm-l6", "input": ["a", "b", "c"]})
        client.post("/v1/embeddings", content=b'{"model": "minilm-l6", "input": ["ok", "\\ud800"]}',
                    headers={"content-type": "application/json"})  # a lone surrogate, as JSON escapes it
        client.get("/no/such/path")
        assert _metric(client, 'zoo_requests_total{path="/v1/embeddings",status="200"}') == 1
        assert _metric(client, 'zoo_requests_total{path="/v1/embeddings",status="400"}') == 1
        assert _metric(client, 'zoo_requests_total{path="other",status="404"}') == 1
        assert _metric(client, 'zoo_inputs_total{model="minilm-l6"}') == 3
        assert _metric(client, 'zoo_request_errors_total{kind="bad_input"}') == 1
        assert _metric(client, 'zoo_forward_passes{model="minilm-l6"}') == 2
        assert _metric(client, 'zoo_queue_inputs{model="minilm-l6"}') == 0
        assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def _hold_the_model(model, monkeypatch) -> tuple[threading.Event, threading.Event, list]:
    """``(started, release, seen)``: every forward pass waits for ``release`` once it has said
    ``started``, and ``seen`` lists the items of each."""
    featurize = model.featurize_with_report
    started, release, seen = threading.Event(), threading.Event(), []

    def held(items, **kwargs):
        seen.append(list(items))
        started.set()
        release.wait(timeout=30)
        return featurize(items, **kwargs)

    monkeypatch.setattr(model, "featurize_with_report", held)
    return started, release, seen


def test_a_full_queue_answers_429_with_retry_after_and_the_server_goes_on(minilm, monkeypatch):
    started, release, _ = _hold_the_model(minilm, monkeypatch)
    with TestClient(create_app({"m": minilm}, max_queue=4)) as client:
        first: dict = {}
        worker = threading.Thread(target=lambda: first.update(answer=client.post(
            "/v1/embeddings", json={"model": "m", "input": ["a", "b", "c"]})))
        worker.start()
        try:
            assert started.wait(timeout=30), "the first request never reached the model"
            busy = client.post("/v1/embeddings", json={"model": "m", "input": ["d", "e"]})
            assert busy.status_code == 429 and busy.json()["error"]["code"] == "queue_full"
            assert int(busy.headers["retry-after"]) >= 1 and "retry after" in busy.json()["error"]["message"]
        finally:
            release.set()
            worker.join(timeout=60)
        assert first["answer"].status_code == 200
        assert client.post("/v1/embeddings", json={"model": "m", "input": ["d", "e"]}).status_code == 200
        assert _metric(client, 'zoo_request_errors_total{kind="queue_full"}') >= 1


def test_a_stalled_body_is_refused_with_408():
    from starlette.requests import Request

    async def receive():
        if not sent:
            sent.append(1)
            return {"type": "http.request", "body": b'{"model": "m", ', "more_body": True}
        await asyncio.sleep(60)  # the client stalls

    sent: list[int] = []
    request = Request({"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": []}, receive)
    began = time.monotonic()
    with pytest.raises(RequestError) as refused:
        asyncio.run(_read_body(request, 1 << 20, timeout=0.2))
    assert refused.value.status == 408 and "--body-timeout" in refused.value.message
    assert time.monotonic() - began < 5


def test_a_huge_text_is_refused_by_index_before_it_reaches_the_model(minilm):
    with TestClient(create_app({"m": minilm}, max_text_chars=1000)) as client:
        refused = client.post("/v1/embeddings", json={"model": "m", "input": ["fine", "x" * 1001]})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "input[1]"
        assert "--max-text-chars" in refused.json()["error"]["message"]
        assert _metric(client, 'zoo_forward_passes{model="m"}') == 0
        assert client.post("/v1/embeddings", json={"model": "m", "input": ["x" * 1000]}).status_code == 200


def test_a_request_alone_is_admitted_whatever_its_size_and_mixed_kinds_count_once(open_clip_dir):
    """A request with texts and images to an image-text model, larger than --max-queue, on an idle
    server: admitted (a request alone is never refused forever)."""
    import base64 as b64
    import io

    from PIL import Image

    import zoo

    model = zoo.load(str(open_clip_dir), device="cpu")
    png = io.BytesIO()
    Image.new("RGB", (32, 32), "green").save(png, format="PNG")
    url = "data:image/png;base64," + b64.b64encode(png.getvalue()).decode()
    with TestClient(create_app({"clip": model}, max_queue=3)) as client:
        answer = client.post("/v1/embeddings", json={"model": "clip", "input": ["a", "b", url, url, "c"]})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["data"]) == 5


def test_a_data_url_no_modality_takes_is_refused_not_embedded_as_text(minilm):
    with TestClient(create_app({"m": minilm})) as client:
        refused = client.post("/v1/embeddings", json={"model": "m", "input": ["fine", "data:application/pdf;base64,AAAA"]})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "input[1]"
        assert "data URL of type application/pdf" in refused.json()["error"]["message"]
        assert client.post("/v1/embeddings", json={"model": "m", "input": ["data: a text"]}).status_code == 200


def test_audio_over_max_audio_seconds_is_refused_by_index_naming_its_duration_and_the_flag():
    import io

    import numpy as np
    import soundfile

    import zoo

    def wav(seconds: float) -> str:
        buf = io.BytesIO()
        soundfile.write(buf, 0.1 * np.sin(np.arange(int(16000 * seconds)) / 5), 16000, format="WAV")
        return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()

    with TestClient(create_app({"m": zoo.load("ge2e-speaker", device="cpu")}, max_audio_seconds=2)) as client:
        refused = client.post("/v1/embeddings", json={"model": "m", "input": [wav(1), wav(3)]})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "input[1]"
        assert "audio of 3.0 s is longer than the 2 s allowed (zoo serve --max-audio-seconds" in refused.text
        assert client.post("/v1/embeddings", json={"model": "m", "input": [wav(2)]}).status_code == 200


# Connections that never finish their headers, on uvicorn itself (both of its HTTP parsers).

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_stalled(port: int, head: bytes) -> socket.socket:
    """A connection that sends ``head`` (a request's beginning, or nothing) and stalls."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    if head:
        sock.sendall(head)
    return sock


def until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """What the server sends before it closes the connection, and when it closed (monotonic)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        raise AssertionError(f"the server kept a stalled connection open for 30 s; it sent {data[:80]!r}") from None
    finally:
        sock.close()
    return data, time.monotonic()


async def _hello(scope, receive, send) -> None:
    """An ASGI app that answers "ok"."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.contextmanager
def _running(server) -> Iterator[None]:
    """A ``uvicorn.Server`` serving on a thread of this process until the block ends."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.mark.slow
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_max_connections_answers_503_beyond_it_and_stalled_connections_free_their_places():
    """zoo serve's own uvicorn set-up (as serve() builds it), around a trivial app."""
    from zoo.serve import _server
    from zoo.serve._frontdoor import Frontdoor, Metrics

    app = Frontdoor(_hello, api_key=None, metrics=Metrics({}))
    port = _free_port()
    server = _server(app, host="127.0.0.1", port=port, log_level="warning", header_timeout=1, max_header_bytes=4096,
                     max_connections=3)
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with _running(server):
        stalled = [open_stalled(port, b"GET /health HT") for _ in range(3)]
        time.sleep(0.2)  # accepted: they count
        busy, _ = until_closed(open_stalled(port, request))
        assert busy.startswith(b"HTTP/1.1 503"), busy
        for sock in stalled:  # the header deadline closes them, and with them their places
            assert until_closed(sock)[0].startswith(b"HTTP/1.1 408")
        assert until_closed(open_stalled(port, request))[0].startswith(b"HTTP/1.1 200")
    assert 'zoo_request_errors_total{kind="header_timeout"} 3.0' in app.metrics.render()[0].decode()


@pytest.mark.allow_hosts(["127.0.0.1"])
@pytest.mark.parametrize("http", ["h11", pytest.param("httptools", marks=pytest.mark.slow)])
def test_headers_that_stall_get_408_at_the_deadline_and_oversized_ones_431(http):
    pytest.importorskip(http)
    import uvicorn

    from zoo.serve._connections import guarded_protocol

    refused: list[str] = []
    protocol = guarded_protocol(header_timeout=1, max_header_bytes=4096, refused=refused.append, http=http)
    port = _free_port()
    with _running(uvicorn.Server(uvicorn.Config(_hello, port=port, http=protocol, log_level="warning"))):
        _guard_scenario(port, refused)


def _guard_scenario(port: int, refused: list[str]) -> None:
    opened = time.monotonic()
    silent = open_stalled(port, b"")
    partial = open_stalled(port, b"POST /v1/embeddings HTT")
    reused = open_stalled(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # answered, then its next request stalls
    assert reused.recv(4096).startswith(b"HTTP/1.1 200")
    reused.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Half")
    big = open_stalled(port, b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 5000 + b"\r\n")
    good = open_stalled(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert until_closed(good)[0].startswith(b"HTTP/1.1 200"), "a good request beside them was not served"
    too_large, _ = until_closed(big)
    assert too_large.startswith(b"HTTP/1.1 431") and b"--max-header-kb" in too_large, too_large
    lived = _trickle(port)  # a header byte every 0.1 s: never idle, never done, closed all the same
    assert 0.9 < lived < 10
    for sock in (partial, reused):
        answer, closed = until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408") and b'"code": "header_timeout"' in answer, answer
        assert b"--header-timeout" in answer and 0.9 < closed - opened < 10
    answer, closed = until_closed(silent)
    assert answer == b"" and 0.9 < closed - opened < 10  # nothing asked, nothing answered: closed
    assert sorted(refused) == ["header_timeout"] * 3 + ["header_too_large"]


def _trickle(port: int) -> float:
    """Send a request's head a byte every 0.1 s until the server closes the connection (at most
    10 s): the seconds it stayed open."""
    sock = open_stalled(port, b"GET / HTTP/1.1\r\n")
    began = time.monotonic()
    try:
        while time.monotonic() < began + 10:
            sock.sendall(b"X")
            time.sleep(0.1)
    except OSError:  # broken pipe or reset: the server closed it
        return time.monotonic() - began
    finally:
        sock.close()
    raise AssertionError("a connection that sends its headers a byte at a time was kept open for 10 s")


def test_a_request_past_its_deadline_gets_503_and_leaves_the_queue(minilm, monkeypatch):
    started, release, seen = _hold_the_model(minilm, monkeypatch)
    with TestClient(create_app({"m": minilm}, request_timeout=0.5)) as client:
        first: dict = {}
        worker = threading.Thread(target=lambda: first.update(answer=client.post(
            "/v1/embeddings", json={"model": "m", "input": ["a"]})))
        worker.start()
        try:
            assert started.wait(timeout=30), "the first request never reached the model"
            began = time.monotonic()
            late = client.post("/v1/embeddings", json={"model": "m", "input": ["queued behind it"]})
            assert late.status_code == 503 and late.json()["error"]["code"] == "request_timeout"
            assert "--request-timeout" in late.json()["error"]["message"] and late.headers["retry-after"] == "1"
            assert time.monotonic() - began < 10
        finally:
            release.set()
            worker.join(timeout=60)
        assert first["answer"].status_code == 503  # it too waited past its deadline
        assert client.post("/v1/embeddings", json={"model": "m", "input": ["b"]}).status_code == 200  # goes on
        assert ["queued behind it"] not in seen  # the late request never ran
        assert _metric(client, 'zoo_request_errors_total{kind="request_timeout"}') >= 1
