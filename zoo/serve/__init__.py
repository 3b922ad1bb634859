"""``zoo serve``: zoo models behind one OpenAI-compatible HTTP endpoint, with dynamic batching.

>>> from zoo.serve import serve
>>> serve(["minilm-l6"], port=8080)   # POST /v1/embeddings, GET /v1/models, /health, /metrics

Needs the ``serve`` extra (Starlette, uvicorn, prometheus-client): ``pip install 'zoo-models[serve]'``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from zoo.catalog._loader import load
from zoo.store._settings import serve_api_key

if TYPE_CHECKING:
    import uvicorn

    from zoo.core._model import Model

    from ._frontdoor import Frontdoor

log = logging.getLogger("zoo.serve")


def _require_server() -> None:
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ImportError("zoo serve needs Starlette, uvicorn and prometheus-client: "
                          "pip install 'zoo-models[serve]'") from exc


def _load_models(names: Sequence[str], rerankers: Sequence[str], *, device: str | None, runtime: str | None
                 ) -> dict[str, Model]:
    """Each model once, by the name requests will give; ``rerankers`` loaded as rerankers."""
    twice = sorted(set(names) & set(rerankers))
    if twice:
        raise ValueError(f"{twice[0]!r} is named both as a model and as a reranker; name it once")
    models = {name: load(name, device=device, runtime=runtime) for name in names}
    models |= {name: load(name, device=device, kind="reranker") for name in rerankers}
    if not models:
        raise ValueError("name at least one model to serve")
    return models


def serve(names: Sequence[str], *, rerankers: Sequence[str] = (), host: str = "127.0.0.1", port: int = 8080,
          max_batch: int = 64, max_wait_ms: float = 5, batch_size: int = 32, device: str | None = None,
          runtime: str | None = None, max_body_mb: float = 32, max_inputs: int = 2048, max_queue: int = 8192,
          body_timeout: float = 30, api_key: str | None = None, max_text_chars: int = 100_000,
          max_audio_seconds: float = 600, header_timeout: float = 10, max_header_kb: int = 64,
          max_connections: int = 1024, request_timeout: float = 120, stop_after: float | None = None,
          media_roots: Sequence[str | os.PathLike[str]] = (), log_level: str = "info") -> None:
    """Load each model once and serve them until SIGINT / SIGTERM (in-flight requests finish first).

    Args:
        names: models to serve, by any name :func:`zoo.load` takes; requests name them so.
        rerankers: more models, loaded as rerankers (``zoo.load(name, kind="reranker")``): for
            folders whose files do not say their kind (a bare sequence classifier).
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
        max_audio_seconds: longer audio gets 400, read from its header before any sample is decoded
            (``inf``: no bound).
        max_queue: most inputs queued or running per model; a request beyond gets 429 with
            ``Retry-After`` (the seconds the queue takes to drain at the recent pace).
        body_timeout: a client that sends nothing of its body for this many seconds gets 408.
        request_timeout: a request not answered this many seconds after its body was read gets 503
            with ``Retry-After`` (its inputs leave the queue), so no client waits without end.
        header_timeout: a request whose headers are not all in this many seconds after its
            connection opened (or its previous answer ended) gets 408, and the connection closes.
        max_header_kb: more KiB of headers get 431.
        max_connections: most connections and requests at once; a request beyond gets uvicorn's 503.
        api_key: every request but ``GET /health`` must send ``Authorization: Bearer KEY``, or
            gets OpenAI's 401; None or empty reads ``$ZOO_API_KEY``; both unset: no key (said in the log).
        stop_after: shut down by itself after this many seconds (tests, batch jobs).
        media_roots: folders whose files a request may name (``{"video": "/srv/clips/a.mp4"}``),
            links resolved so that none leads out; none: media only as data URLs.
    """
    _check_settings(**{name: value for name, value in locals().items() if name in _RULES})  # the bounded ones
    _require_server()
    _check_folders(media_roots)
    from ._app import create_app

    _log_like_uvicorn(log_level)
    models = _load_models(names, rerankers, device=device, runtime=runtime)
    key = (api_key or "").strip() or serve_api_key()
    _log_start(models, key, host, port)
    app = create_app(models, max_batch=max_batch, max_wait_ms=max_wait_ms, batch_size=batch_size,
                     max_body_bytes=int(max_body_mb * 2**20), max_inputs=max_inputs, max_queue=max_queue,
                     body_timeout=body_timeout, api_key=key, max_text_chars=max_text_chars,
                     max_audio_seconds=max_audio_seconds, request_timeout=request_timeout, media_roots=media_roots)
    server = _server(app, host=host, port=port, log_level=log_level, header_timeout=header_timeout,
                     max_header_bytes=max_header_kb << 10, max_connections=max_connections)
    _stop_after(stop_after)
    with _exit_quietly_on_signals():
        server.run()  # on uvloop and httptools where installed
    log.info("zoo serve stopped")


def _check_folders(media_roots: Sequence[str | os.PathLike[str]]) -> None:
    missing = next((root for root in media_roots if not os.path.isdir(root)), None)
    if missing is not None:
        raise ValueError(f"--media-root {missing} is no folder")


def _stop_after(seconds: float | None) -> None:
    """Shut down after ``seconds`` (None: never) through the server's own path, as SIGTERM does
    (in-flight requests finish)."""
    if seconds is None:
        return
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()


def _log_start(models: dict[str, Model], api_key: str | None, host: str, port: int) -> None:
    for name, model in models.items():
        log.info("serving %s: %s, %d dimensions, on %s (%s)", name, model.modality, model.embed_dim, model.device,
                 model.runtime)
    if api_key:
        log.info("every request but GET /health needs the API key")
    else:
        log.info("no API key is asked: anyone who reaches %s:%d may embed (zoo serve --api-key or ZOO_API_KEY)",
                 host, port)


def _server(app: Frontdoor, *, host: str, port: int, log_level: str, header_timeout: float, max_header_bytes: int,
            max_connections: int) -> uvicorn.Server:
    """uvicorn serving ``app``, its connections guarded (headers in ``header_timeout`` seconds and
    ``max_header_bytes``), refusals counted in the app's metrics."""
    import uvicorn

    from ._connections import guarded_protocol

    protocol = guarded_protocol(header_timeout=header_timeout, max_header_bytes=max_header_bytes,
                                refused=app.metrics.refused)
    # zoo's own access log (one JSON line per request, with its id) replaces uvicorn's
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30,
                            access_log=False, http=protocol, limit_concurrency=max_connections,
                            h11_max_incomplete_event_size=2 * max_header_bytes)  # the guard answers first
    return uvicorn.Server(config)


# What each setting must be, or every request would fail: (in words, test).
_AT_LEAST_1 = ("at least 1", lambda v: v >= 1)
_POSITIVE = ("positive", lambda v: v > 0)
_SECONDS = ("a positive number of seconds", lambda v: 0 < v < math.inf)
_RULES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "max_batch": _AT_LEAST_1, "batch_size": _AT_LEAST_1, "max_wait_ms": (">= 0", lambda v: v >= 0),
    "max_body_mb": _POSITIVE, "max_inputs": _AT_LEAST_1, "max_queue": _AT_LEAST_1, "body_timeout": _SECONDS,
    "max_text_chars": _AT_LEAST_1, "max_audio_seconds": _POSITIVE, "header_timeout": _SECONDS,
    "max_header_kb": _AT_LEAST_1, "max_connections": _AT_LEAST_1, "request_timeout": _SECONDS,
}


def _check_settings(**settings: float) -> None:
    """Refuse a setting that would fail every request, before any model loads (NaN included)."""
    wrong = [f"--{name.replace('_', '-')} must be {_RULES[name][0]}, not {value}"
             for name, value in settings.items() if not _RULES[name][1](value)]
    if wrong:
        raise ValueError("zoo serve " + "; ".join(wrong))


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

