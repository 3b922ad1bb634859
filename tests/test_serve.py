"""`zoo serve` on a real server: a subprocess on a loopback port, spoken to with the openai client and httpx.

Each server stops by itself (--stop-after) and is terminated at teardown; its start-up wait is
bounded in time. Expected vectors come from featurize in this process.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import zoo
from required_tools import require_tool

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")


def _wav_base64() -> str:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(1600, np.float32), 16000, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


_WAV_B64 = _wav_base64()

pytestmark = [pytest.mark.allow_hosts(["127.0.0.1"]), pytest.mark.slow]

TEXTS = ["A man is playing a guitar.", "hi", "The new movie is awesome.", "cats and dogs", "Stocks fell."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``zoo serve NAMES`` in a subprocess, its log in a file (a pipe nobody reads would fill)."""

    def __init__(self, *names: str, extra: tuple[str, ...] = ()) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zoo", "serve", *names, "--port", str(self.port), "--device", "cpu",
             "--stop-after", "300", *extra],
            stdout=self.log, stderr=subprocess.STDOUT, text=True, env={**os.environ})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"zoo serve exited: {self.output}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("zoo serve did not answer /health within 120 s")

    def embed(self, model: str, inputs: object, **fields: object) -> httpx.Response:
        # ASCII JSON (\uXXXX escapes), as many clients send: it carries lone surrogates too.
        body = json.dumps({"model": model, "input": inputs, **fields}).encode()
        return httpx.post(f"{self.url}/v1/embeddings", content=body, timeout=60,
                          headers={"content-type": "application/json"})

    @property
    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def output_so_far(self) -> str:
        """The log while the server still writes it: read with pread, which leaves the file offset
        that the server's writes share alone (a seek would make them overwrite the log)."""
        fd, chunks, offset = self.log.fileno(), [], 0
        while chunk := os.pread(fd, 1 << 16, offset):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks).decode(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> bytes:
    require_tool("espeak-ng")
    path = tmp_path_factory.mktemp("serve-speech") / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "Serving embeddings over HTTP."], check=True)
    return path.read_bytes()


@pytest.fixture(scope="module")
def server(open_clip_dir):
    srv = Server("minilm-l6", "efficientnet-lite0", "ge2e-speaker", str(open_clip_dir), extra=("--max-body-mb", "1"))
    yield srv
    srv.stop()


def _png(seed: int, size: tuple[int, int] = (64, 80)) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _data_url(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(payload).decode()


def _rows(reply: httpx.Response) -> np.ndarray:
    assert reply.status_code == 200, reply.text
    return np.array([d["embedding"] for d in reply.json()["data"]], dtype=np.float32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_openai_client_gets_featurize_vectors(server, minilm):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    got = client.embeddings.create(model="minilm-l6", input=TEXTS)  # the client asks for base64
    rows = np.array([d.embedding for d in got.data], dtype=np.float32)
    assert [d.index for d in got.data] == list(range(len(TEXTS)))
    assert got.usage.prompt_tokens == sum(len(ids) for ids in minilm.preprocess(TEXTS)["input_ids"])
    assert _cosines(rows, minilm.featurize(TEXTS)).min() >= 0.9999


def test_one_request_alone_is_bit_equal_to_featurize_in_float_and_base64(server, minilm):
    # Alone on the server, a request is one forward pass: featurize with the server's batch size (32).
    expected = minilm.featurize(TEXTS, batch_size=32)
    assert np.array_equal(_rows(server.embed("minilm-l6", TEXTS)), expected)
    encoded = server.embed("minilm-l6", TEXTS, encoding_format="base64").json()["data"]
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in encoded])
    assert np.array_equal(decoded, expected)


def test_dimensions_truncates_and_renormalises_like_featurize(server, minilm):
    rows = _rows(server.embed("minilm-l6", TEXTS, dimensions=128))
    with pytest.warns(UserWarning, match="Matryoshka"):
        expected = minilm.featurize(TEXTS, batch_size=32, truncate_dim=128)
    assert rows.shape == (len(TEXTS), 128)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1, rtol=1e-5)
    assert _cosines(rows, expected).min() >= 0.9999


def test_images_as_data_urls(server):
    import zoo

    pngs = [_png(0), _png(1, (40, 30))]
    rows = _rows(server.embed("efficientnet-lite0", [_data_url("image/png", b) for b in pngs]))
    expected = zoo.load("efficientnet-lite0", device="cpu").featurize(pngs)
    assert _cosines(rows, expected).min() >= 0.9999


def test_audio_as_a_data_url_through_the_openai_client(server, speech_wav):
    import zoo

    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    got = client.embeddings.create(model="ge2e-speaker", input=[_data_url("audio/wav", speech_wav)])
    expected = zoo.load("ge2e-speaker", device="cpu").featurize([speech_wav])
    assert len(got.data[0].embedding) == 256
    assert _cosines(np.array([got.data[0].embedding], dtype=np.float32), expected).min() >= 0.9999


def test_image_text_model_takes_texts_and_images_in_one_request_into_one_space(server, open_clip_dir):
    import zoo

    name = str(open_clip_dir)
    pngs = [_png(2, (32, 32)), _png(3, (48, 40))]
    inputs = ["a photo of a cat", _data_url("image/png", pngs[0]), "a diagram", _data_url("image/png", pngs[1])]
    rows = _rows(server.embed(name, inputs))
    model = zoo.load(name, device="cpu")
    expected = np.empty_like(rows)
    expected[[0, 2]] = model.featurize_texts(["a photo of a cat", "a diagram"])
    expected[[1, 3]] = model.featurize_images(pngs)
    assert rows.shape == (4, 32)
    assert _cosines(rows, expected).min() >= 0.9999


def test_64_concurrent_clients_each_get_their_own_rows(server, minilm):
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'markets'}" for i in range(64)]
    expected = minilm.featurize(texts)
    with ThreadPoolExecutor(64) as pool:
        rows = np.concatenate(list(pool.map(lambda t: _rows(server.embed("minilm-l6", t)), texts)))
    # Each row is closest to its own text's: no client got another's.
    assert _cosines(rows, expected).min() >= 0.9999
    assert (np.argmax(rows @ expected.T, axis=1) == np.arange(64)).all()


@pytest.mark.parametrize(("model", "inputs", "fields", "status", "needle"), [
    ("minilm-l5", "x", {}, 404, "did you mean 'minilm-l6'"),
    ("minilm-l6", [], {}, 400, "non-empty"),
    ("minilm-l6", ["ok", "data:image/png;base64,AAAA"], {}, 400, "input[1] is an image; minilm-l6 embeds text"),
    ("efficientnet-lite0", ["data:image/png;base64,bm90IGFuIGltYWdl"], {}, 400, "input[0]"),
    ("ge2e-speaker", ["data:audio/wav;base64,UklGRgAAAABXQVZF"], {}, 400, "input[0]"),
    ("ge2e-speaker", ["hello"], {}, 400, "input[0] is a text"),
    ("minilm-l6", "x", {"encoding_format": "hex"}, 400, "encoding_format"),
    ("minilm-l6", "x", {"dimensions": 1000}, 400, "dimensions 1000 is more than minilm-l6's 384"),
    ("minilm-l6", [1, 2, 3], {}, 400, "input[0] is token ids"),
    ("minilm-l6", ["x"] * 2049, {}, 400, "at most 2048 per request"),
    ("minilm-l6", "x", {"encodng_format": "float"}, 400, "unknown field 'encodng_format'; did you mean "
                                                          "'encoding_format'"),
    ("efficientnet-lite0", ["data:image/png;base64,bm90IGFuIGltYWdl"], {}, 400,
     "declared as image/png is not a PNG file"),
    # a real GIF declared as a PNG, a real WAV declared as FLAC, a type no decoder reads
    ("efficientnet-lite0", ["data:image/png;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"], {}, 400,
     "declared as image/png is not a PNG file"),
    ("ge2e-speaker", [f"data:audio/flac;base64,{_WAV_B64}"], {}, 400, "declared as FLAC is a WAV file"),
    ("efficientnet-lite0", ["data:image/x-icon;base64,AAABAAEAAQEAAAEAIAAwAAAAFgAAACgAAAABAAAAAgAAAAEAIAAAAAAA"], {},
     400, "image/x-icon is not one zoo decodes"),
])
def test_bad_requests_get_named_4xx_and_the_server_stays_up(server, model, inputs, fields, status, needle):
    reply = server.embed(model, inputs, **fields)
    assert reply.status_code == status and needle in reply.json()["error"]["message"], reply.text
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200


def test_deeply_nested_json_is_a_400_not_a_crash(server):
    body = '{"model": "minilm-l6", "input": ' + "[" * 100_000 + "]" * 100_000 + "}"
    reply = httpx.post(f"{server.url}/v1/embeddings", content=body, timeout=30,
                       headers={"content-type": "application/json"})
    assert reply.status_code == 400 and "nested too deeply" in reply.json()["error"]["message"]
    assert server.embed("minilm-l6", "still up").status_code == 200


def test_text_that_starts_with_data_is_text(server, minilm):
    texts = ["data: revenue up 5%", "data:image/png is how a PNG data URL begins"]
    assert _cosines(_rows(server.embed("minilm-l6", texts)), minilm.featurize(texts)).min() >= 0.9999


def test_an_unknown_path_gets_a_json_404_naming_the_routes(server):
    reply = httpx.post(f"{server.url}/v1/embedding", json={"model": "minilm-l6", "input": "x"}, timeout=10)
    assert reply.status_code == 404 and "POST /v1/embeddings" in reply.json()["error"]["message"]


def test_a_bad_image_fails_only_its_own_request_in_a_shared_batch(server):
    good, bad = _data_url("image/png", _png(4)), "data:image/png;base64,bm90IGFuIGltYWdl"
    bodies = [[good], [good, bad], [good]] * 4
    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(lambda inputs: server.embed("efficientnet-lite0", inputs), bodies))
    assert [r.status_code for r in replies] == [200, 400, 200] * 4
    assert all("input[1]" in r.json()["error"]["message"] for r in replies[1::3])


def _wav(seconds: float, rate: int = 16000, fmt: str = "WAV") -> bytes:
    """A tone (silence for FLAC, which then takes 14 KB for ten minutes)."""
    import soundfile

    frames = int(seconds * rate)
    samples = np.zeros(frames, np.int16) if fmt == "FLAC" else 0.1 * np.sin(np.arange(frames) / 5)
    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("model", "good", "bad", "needle"), [
    ("minilm-l6", "a good sentence", "broken \ud800 text", "not valid Unicode"),
    ("efficientnet-lite0", "png", "broken png", "SyntaxError"),
    ("efficientnet-lite0", "png", "dds", "image/vnd-ms.dds is not one zoo decodes"),
    ("ge2e-speaker", "wav", "corrupt wav", "cannot decode audio"),
    ("ge2e-speaker", "wav", "601 s flac", "audio of 601.0 s is longer than the 600 s allowed (zoo serve "
                                          "--max-audio-seconds"),
    ("ge2e-speaker", "wav", "500 Hz wav", "sample rate 500 Hz is outside 1000-384000 Hz"),
])
def test_a_poisoned_request_fails_alone_whatever_its_decoder_raises(server, model, good, bad, needle):
    from bad_files import broken_png_chunk, dds_of_unknown_format

    payloads = {"png": _data_url("image/png", _png(5)), "broken png": _data_url("image/png", broken_png_chunk()),
                "dds": _data_url("image/vnd-ms.dds", dds_of_unknown_format()),
                "wav": _data_url("audio/wav", _wav(1.5)),
                "corrupt wav": _data_url("audio/wav", _wav(1.5)[:20] + b"\xff\xff" + _wav(1.5)[22:]),
                "601 s flac": _data_url("audio/flac", _wav(601, 8000, "FLAC")),
                "500 Hz wav": _data_url("audio/wav", _wav(0.5, 500))}
    good, bad = payloads.get(good, good), payloads.get(bad, bad)
    bodies = [[good], [good, bad], [good, good]] * 3
    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(lambda inputs: server.embed(model, inputs), bodies))
    assert [r.status_code for r in replies] == [200, 400, 200] * 3
    assert all("input[1]" in r.json()["error"]["message"] and needle in r.json()["error"]["message"]
               for r in replies[1::3])
    assert server.embed(model, [good]).status_code == 200


def test_an_oversized_body_gets_413_naming_the_limit(server):
    reply = server.embed("minilm-l6", ["x" * (1 << 20)] * 2)
    assert reply.status_code == 413 and "--max-body-mb" in reply.json()["error"]["message"]
    assert server.embed("minilm-l6", "still up").status_code == 200


def test_models_lists_modality_and_dimension(server, open_clip_dir):
    data = httpx.get(f"{server.url}/v1/models", timeout=5).json()["data"]
    assert {(m["id"], m["modality"], m["dimension"]) for m in data} == {
        ("minilm-l6", "text", 384), ("efficientnet-lite0", "vision", 1280), ("ge2e-speaker", "audio", 256),
        (str(open_clip_dir), "image-text", 32)}


def _wait_for(condition, what: str, seconds: float = 60, detail=lambda: "") -> None:
    """Until ``condition()`` holds; fails naming ``what`` after ``seconds`` (a bound, not a timing)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds:.0f} s\n{detail()}"
        time.sleep(0.05)


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0():
    """The request is held in flight by its own client: the headers and half the body are sent, the
    server counts it in flight, and only once SIGTERM has put the server in its graceful shutdown is the
    rest sent. So the signal always lands while the request is in flight, however fast or loaded the
    machine, and the request can only have been answered after it."""
    import http.client

    srv = Server("minilm-l6", extra=("--max-batch", "8"))
    texts = [f"a sentence, number {i}, sent in two halves around the signal" for i in range(40)]
    body = json.dumps({"model": "minilm-l6", "input": texts}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
    status = None
    try:
        conn.putrequest("POST", "/v1/embeddings")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(message_body=body[: len(body) // 2])
        _wait_for(lambda: httpx.get(f"{srv.url}/health", timeout=5).json()["in_flight"] == 1,
                  "the request never reached the server")
        srv.proc.send_signal(signal.SIGTERM)
        _wait_for(lambda: "Waiting for connections to close" in srv.output_so_far(),
                  "the server did not begin its graceful shutdown with the request open", detail=srv.output_so_far)
        assert srv.proc.poll() is None, srv.output
        conn.send(body[len(body) // 2:])
        reply = conn.getresponse()
        status, data = reply.status, reply.read()
    finally:
        conn.close()
        if srv.proc.poll() is None and status is None:  # failed before the reply came: do not leave it running
            srv.proc.kill()
    assert srv.proc.wait(timeout=60) == 0, srv.output
    assert status == 200, data
    assert len(json.loads(data)["data"]) == len(texts)


def test_a_failing_model_fails_its_batch_loudly_and_the_batcher_goes_on(caplog):
    from zoo.core._featurize import FeaturizeReport
    from zoo.serve._batcher import Batcher

    def run(items, key):
        if "boom" in items:
            raise RuntimeError("CUDA out of memory (simulated)")
        return np.ones((len(items), 2), dtype=np.float32), FeaturizeReport(kept=list(range(len(items)))), None

    async def scenario():
        batcher = Batcher(run, max_batch=4, max_wait_ms=1, name="m")
        batcher.start()
        try:
            with pytest.raises(RuntimeError, match="simulated"):
                await batcher.embed(["boom"], "text")
            rows, tokens = await batcher.embed(["fine", "too"], "text")
            return rows
        finally:
            await batcher.stop()

    with caplog.at_level(logging.ERROR, logger="zoo.serve"):
        rows = asyncio.run(scenario())
    assert rows.shape == (2, 2)
    assert "model m failed on a batch of 1 items" in caplog.text and "simulated" in caplog.text


@pytest.mark.parametrize(("flag", "value"), [
    ("--max-batch", "0"), ("--batch-size", "-1"), ("--max-wait-ms", "-5"), ("--max-audio-seconds", "0"),
    ("--header-timeout", "nan"), ("--max-header-kb", "0"), ("--max-connections", "0")])
def test_a_setting_that_would_fail_every_request_is_refused_before_loading(flag, value):
    done = subprocess.run([sys.executable, "-m", "zoo", "serve", "minilm-l6", flag, value],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and f"{flag} must be" in done.stderr, done.stderr


def _fake_run(passes: list[list[int]]):
    """A model for the batcher alone: item x -> row [x, 10x]; negative items cannot be decoded."""
    from zoo.core._featurize import FeaturizeReport

    def run(items, key):
        passes.append(list(items))
        kept = [i for i, x in enumerate(items) if x >= 0]
        report = FeaturizeReport(total=len(items), kept=kept,
                                 skipped=[(i, f"{x} is negative") for i, x in enumerate(items) if x < 0])
        rows = np.array([[items[i], 10 * items[i]] for i in kept], dtype=np.float32).reshape(-1, 2)
        return rows, report, [1] * len(items)

    return run


def test_requests_sharing_a_pass_each_get_their_own_rows_and_a_bad_item_fails_only_its_request():
    from zoo.serve._batcher import Batcher, ItemError

    passes: list[list[int]] = []
    requests = [[5, 1], [7], [3, -4, 2], [9, 8]]  # 8 items: one full pass of 8

    async def scenario():
        batcher = Batcher(_fake_run(passes), max_batch=8, max_wait_ms=5000, batch_size=8, name="m")
        asking = [asyncio.create_task(batcher.embed(r, "text")) for r in requests]
        await asyncio.sleep(0)  # all queued before the worker starts: one gathering, whatever the timing
        batcher.start()
        try:
            return await asyncio.gather(*asking, return_exceptions=True)
        finally:
            await batcher.stop()

    answers = asyncio.run(scenario())
    assert len(passes) == 1 and sorted(passes[0]) == sorted(x for r in requests for x in r)
    for request, answer in zip(requests, answers):
        if -4 in request:
            assert isinstance(answer, ItemError) and answer.index == 1 and "-4 is negative" in answer.reason
        else:
            rows, tokens = answer
            assert rows.tolist() == [[x, 10 * x] for x in request] and tokens == len(request)


def test_gathered_requests_are_sorted_by_length_into_passes():
    from zoo.serve._batcher import Batcher

    seen: list[list[str]] = []

    def run(items, key):
        from zoo.core._featurize import FeaturizeReport

        seen.append(list(items))
        report = FeaturizeReport(total=len(items), kept=list(range(len(items))))
        return np.zeros((len(items), 1), np.float32), report, None

    texts = ["x" * n for n in (9, 1, 7, 3, 8, 2)]

    async def scenario():
        batcher = Batcher(run, max_batch=6, max_wait_ms=5000, batch_size=3, name="m")
        asking = [asyncio.create_task(batcher.embed([t], "text")) for t in texts]
        await asyncio.sleep(0)  # all queued before the worker starts: one gathering of 6
        batcher.start()
        try:
            await asyncio.gather(*asking)
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert [[len(t) for t in part] for part in seen] == [[1, 2, 3], [7, 8, 9]]


@pytest.fixture(scope="module")
def guarded():
    """A server with tight limits: headers within 1 s and 8 KiB, audio up to 2 s."""
    srv = Server("minilm-l6", "ge2e-speaker", extra=("--header-timeout", "1", "--max-header-kb", "8",
                                                     "--max-audio-seconds", "2"))
    yield srv
    srv.stop()


def test_connections_that_stall_in_their_headers_are_closed_at_the_deadline_while_others_are_served(guarded):
    """uvicorn alone never times out a request's headers: 3000 such clients held 3000 connections."""
    from test_serve_frontdoor import open_stalled, until_closed

    opened = time.monotonic()
    silent = [open_stalled(guarded.port, b"") for _ in range(20)]
    partial = [open_stalled(guarded.port, b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Ty")
               for _ in range(20)]
    big = open_stalled(guarded.port, b"POST /v1/embeddings HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n")
    assert guarded.embed("minilm-l6", ["served while 40 connections stall"]).status_code == 200
    too_large, _ = until_closed(big)
    assert too_large.startswith(b"HTTP/1.1 431") and b"--max-header-kb" in too_large, too_large
    for sock in partial:
        answer, closed = until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408") and b"--header-timeout" in answer and closed - opened < 15, answer
    assert all(until_closed(sock)[0] == b"" for sock in silent)
    assert time.monotonic() - opened < 15
    metrics = httpx.get(f"{guarded.url}/metrics", timeout=10).text
    assert 'zoo_request_errors_total{kind="header_timeout"} 20.0' in metrics
    assert 'zoo_request_errors_total{kind="header_too_large"} 1.0' in metrics


def test_max_audio_seconds_reaches_the_server_from_the_command_line(guarded):
    reply = guarded.embed("ge2e-speaker", [_data_url("audio/wav", _wav(1)), _data_url("audio/wav", _wav(3))])
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "input[1]"
    assert "audio of 3.0 s is longer than the 2 s allowed (zoo serve --max-audio-seconds" in reply.text
    assert guarded.embed("ge2e-speaker", [_data_url("audio/wav", _wav(2))]).status_code == 200


def test_a_lora_finetune_is_served_with_the_rows_it_featurizes(tiny_bert_dir, tmp_path):
    """A folder finetune wrote (here the embedding itself, with LoRA) is a model name like any
    other: served, its rows those of zoo.load(folder).featurize."""
    pytest.importorskip("peft")
    folder = tmp_path / "lora-run"
    pairs = [(t, " and ".join(reversed(t.split()))) for t in ("red cat", "blue dog", "green bird", "sun")] * 4
    zoo.load(str(tiny_bert_dir), device="cpu").finetune(pairs, objective="contrastive", strategy="lora",
                                                        output_dir=folder, epochs=1, lr=5e-3, batch_size=8,
                                                        progress=False)
    expected = zoo.load(str(folder), device="cpu").featurize(TEXTS, batch_size=32)
    srv = Server(str(folder))
    try:
        np.testing.assert_allclose(_rows(srv.embed(str(folder), TEXTS)), expected, atol=1e-6)
    finally:
        assert srv.stop() == 0
