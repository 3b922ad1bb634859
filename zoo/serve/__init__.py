"""``zoo serve``: zoo models behind one OpenAI-compatible HTTP endpoint, with dynamic batching.

>>> from zoo.serve import serve
>>> serve(["minilm-l6"], port=8080)   # POST /v1/embeddings, GET /v1/models, /health, /metrics

Needs the ``serve`` extra (Starlette, uvicorn, prometheus-client): ``pip install 'zoo-models[serve]'``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence

from zoo.catalog._loader import load
from zoo.store._settings import serve_api_key

log = logging.getLogger("zoo.serve")


def _require_server() -> None:
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ImportError("zoo serve needs Starlette, uvicorn and prometheus-client: "
                          "pip install 'zoo-models[serve]'") from exc


def serve(names: Sequence[str], *, host: str = "127.0.0.1", port: int = 8080, max_batch: int = 64,
          max_wait_ms: float = 5, batch_size: int = 32, device: str | None = None, runtime: str | None = None,
          max_body_mb: float = 32, max_inputs: int = 2048, max_queue: int = 8192, body_timeout: float = 30,
          api_key: str | None = None, max_text_chars: int = 100_000, stop_after: float | None = None,
          log_level: str = "info") -> None:
    """Load each model once and serve them until SIGINT / SIGTERM (in-flight requests finish first).

    Args:
        names: models to serve, by any name :func:`zoo.load` takes; requests name them so.
        host, port: where to listen (loopback by default).
        max_batch, max_wait_ms: requests waiting together are gathered, up to ``max_batch``
            items; while that is less than a forward pass, it waits at most ``max_wait_ms`` for
            more. ``max_batch=1``: one request at a time.
        batch_size: what was gathered is sorted by length and embedded in forward passes of at
            most this many items, as featurize does; each request is answered when its pass ends.
        device, runtime: as in :func:`zoo.load`.
        max_body_mb: larger request bodies get 413.
        max_inputs: requests with more items get 400.
        max_text_chars: a longer text gets 400 (tokenising megabytes holds the model for seconds
            while truncation keeps a few thousand characters of it).
        max_queue: most inputs queued or running per model; a request beyond gets 429 with
            ``Retry-After`` (the seconds the queue takes to drain at the recent pace).
        body_timeout: a client that sends nothing of its body for this many seconds gets 408.
        api_key: every request but ``GET /health`` must send ``Authorization: Bearer KEY``, or
            gets OpenAI's 401; None or empty reads ``$ZOO_API_KEY``; both unset: no key (said in the log).
        stop_after: shut down by itself after this many seconds (tests, batch jobs).
    """
    _check_settings(max_batch=max_batch, batch_size=batch_size, max_wait_ms=max_wait_ms, max_body_mb=max_body_mb,
                    max_inputs=max_inputs, max_queue=max_queue, body_timeout=body_timeout,
                    max_text_chars=max_text_chars)
    _require_server()
    import uvicorn

    from ._app import create_app

    _log_like_uvicorn(log_level)
    models = {name: load(name, device=device, runtime=runtime) for name in names}
    for name, model in models.items():
        log.info("serving %s: %s, %d dimensions, on %s (%s)", name, model.modality, model.embed_dim, model.device,
                 model.runtime)
    if (api_key or "").strip() or serve_api_key():
        log.info("every request but GET /health needs the API key")
    else:
        log.info("no API key is asked: anyone who reaches %s:%d may embed (zoo serve --api-key or ZOO_API_KEY)",
                 host, port)
    app = create_app(models, max_batch=max_batch, max_wait_ms=max_wait_ms, batch_size=batch_size,
                     max_body_bytes=int(max_body_mb * 2**20), max_inputs=max_inputs, max_queue=max_queue,
                     body_timeout=body_timeout, api_key=(api_key or "").strip() or serve_api_key(),
                     max_text_chars=max_text_chars)
    # zoo's own access log (one JSON line per request, with its id) replaces uvicorn's
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30,
                            access_log=False)
    server = uvicorn.Server(config)
    if stop_after is not None:  # through the server's own shutdown path, as SIGTERM: in-flight requests finish
        timer = threading.Timer(stop_after, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()
    with _exit_quietly_on_signals():
        server.run()  # on uvloop and httptools where installed
    log.info("zoo serve stopped")


def _check_settings(*, max_batch: int, batch_size: int, max_wait_ms: float, max_body_mb: float,
                    max_inputs: int, max_queue: int, body_timeout: float, max_text_chars: int) -> None:
    """Refuse a setting that would fail every request, before any model loads."""
    wrong = [f"--max-batch must be at least 1, not {max_batch}" if max_batch < 1 else "",
             f"--batch-size must be at least 1, not {batch_size}" if batch_size < 1 else "",
             f"--max-wait-ms must be >= 0, not {max_wait_ms}" if max_wait_ms < 0 else "",
             f"--max-body-mb must be positive, not {max_body_mb}" if max_body_mb <= 0 else "",
             f"--max-inputs must be at least 1, not {max_inputs}" if max_inputs < 1 else "",
             f"--max-queue must be at least 1, not {max_queue}" if max_queue < 1 else "",
             f"--body-timeout must be positive, not {body_timeout}" if body_timeout <= 0 else "",
             f"--max-text-chars must be at least 1, not {max_text_chars}" if max_text_chars < 1 else ""]
    if any(wrong):
        raise ValueError("zoo serve " + "; ".join(w for w in wrong if w))


def _log_like_uvicorn(level: str) -> None:
    """zoo's server log (start-up, worker errors with their traceback, warnings such as an
    untrained truncation width) beside uvicorn's, at its level."""
    logging.captureWarnings(True)  # each warning once, as a log line, with no thread-unsafe catch_warnings
    for logger in (log, logging.getLogger("py.warnings"), logging.getLogger("zoo.serve.access")):
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(levelname)-9s %(message)s"))
            logger.addHandler(handler)
            logger.propagate = False
        logger.setLevel(level.upper())


@contextlib.contextmanager
def _exit_quietly_on_signals() -> Iterator[None]:
    """After its graceful shutdown, uvicorn re-raises the signal it caught for the handler it
    replaced; with Python's defaults that kills the process (SIGTERM) or raises
    KeyboardInterrupt (SIGINT). Stopping was asked for and went well, so that handler does
    nothing and the command exits 0."""
    caught = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in caught}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

