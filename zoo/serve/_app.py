"""The HTTP application: OpenAI-compatible ``/v1/embeddings``, Cohere / Jina-compatible
``/v1/rerank``, ``/v1/models``, ``/health`` and Prometheus ``/metrics`` on Starlette, with one
:class:`~zoo.serve._batcher.Batcher` per served model, behind the
:class:`~zoo.serve._frontdoor.Frontdoor` (request ids, API key, access log, metrics). Every
refusal is answered in OpenAI's JSON error shape, which its clients read."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.applications import Starlette  # this module is imported only to serve (the serve extra)
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zoo.catalog._registry import get_registry
from zoo.catalog._spec import a_kind
from zoo.core._rerank import ranking
from zoo.errors import UnsupportedModelKindError
from zoo.plugins.audio import audio_seconds_limit

from ..errors import did_you_mean
from ._batcher import Batcher, ItemError, QueueFull
from ._frontdoor import Frontdoor, Metrics
from ._requests import (
    EmbeddingRequest,
    ItemRules,
    RequestError,
    RerankRequest,
    check_modality,
    parse_request,
    parse_rerank,
)

if TYPE_CHECKING:
    import numpy as np

    from zoo.core._embed_options import EmbedOptions
    from zoo.core._encoder import Encoder
    from zoo.core._featurize import FeaturizeReport
    from zoo.core._model import Model

T = TypeVar("T")
log = logging.getLogger("zoo.serve")


@dataclass
class Served:
    """One model behind the endpoint, with its batcher."""

    name: str
    model: Model
    batcher: Batcher
    options: dict[tuple[str, int | None, str | None], EmbedOptions] = field(default_factory=dict)  # (kind, dims, role)


def _runner(model: Model, batch_size: int, max_audio_seconds: float) -> Any:
    """What the batcher runs on its worker thread: featurize one pass, skipping bad items (audio
    over ``max_audio_seconds`` among them, refused from its header), and count its tokens there,
    in one call, rather than per request on the event loop. A reranker scores pairs instead."""
    if model.kind == "reranker":
        return _score_runner(model, batch_size)

    def run(items: list[Any], key: Hashable) -> tuple[np.ndarray, FeaturizeReport, list[int] | None]:
        assert isinstance(key, tuple)  # (kind, options): checked on the event loop when the first request asked
        kind: str = key[0]
        options: EmbedOptions = key[1]
        with audio_seconds_limit(max_audio_seconds):  # the audio decoder's bound, for this thread's pass only
            rows, report = model.featurize_with_report(items, batch_size=batch_size, progress=False, on_error="skip",
                                                       options=options, return_tensors="np")
        tokens = _token_counts(model.towers[kind], items, report.kept) if kind == "text" else None
        return rows, report, tokens  # type: ignore[return-value]  # return_tensors="np" gives an ndarray

    return run


def _score_runner(model: Model, batch_size: int) -> Any:
    """A reranker's pass: ``(query, document)`` pairs to ``(N, 1)`` scores, bad pairs skipped, and
    each pair's tokens as the model counts them."""

    def run(items: list[Any], key: Hashable) -> tuple[np.ndarray, FeaturizeReport, list[int] | None]:
        scores = model.score(items, batch_size=batch_size, progress=False, on_error="skip")
        report = model.last_report  # this thread is the only one that runs the model
        tokens = [0] * len(items)
        if report.kept:  # every pair of a pass may be bad: each is its request's 400
            for index, length in zip(report.kept, model.encoder.lengths([items[i] for i in report.kept]) or []):
                tokens[index] = int(length)
        return scores.reshape(len(report.kept), model.embed_dim), report, tokens

    return run


def _token_counts(tower: Encoder, texts: list[str], kept: list[int]) -> list[int] | None:
    """Tokens per text as the model counts them (truncated), for ``usage``; 0 for the texts
    featurize skipped (never tokenised: a bad one would fail the whole pass); None when its
    tokenizer is not a transformers one (open_clip's)."""
    tokenizer = tower.preprocess
    if not hasattr(tokenizer, "model_max_length"):
        return None
    counts = [0] * len(texts)
    if kept:
        lengths = tokenizer([texts[i] for i in kept], truncation=True, max_length=getattr(tower, "max_length", None),
                            return_length=True)["length"]
        for index, length in zip(kept, lengths):
            counts[index] = int(length)
    return counts


@dataclass(frozen=True)
class _Limits:
    """What one request may hold and how long it may take (``zoo serve``'s flags)."""

    max_body_bytes: int
    body_timeout: float
    max_inputs: int
    max_text_chars: int
    request_timeout: float
    media_roots: tuple[Path, ...] = ()


class _InFlight:
    """Requests being answered, for ``/health``: ``with in_flight:`` around each."""

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> None:
        self.count += 1

    def __exit__(self, *exc: object) -> None:
        self.count -= 1


def create_app(models: dict[str, Model], *, max_batch: int = 64, max_wait_ms: float = 5, batch_size: int = 32,
               max_body_bytes: int = 32 << 20, max_inputs: int = 2048, max_queue: int | None = 8192,
               body_timeout: float = 30, api_key: str | None = None, max_text_chars: int = 100_000,
               max_audio_seconds: float = 600, request_timeout: float = 120,
               media_roots: Sequence[str | os.PathLike[str]] = ()) -> Frontdoor:
    """An ASGI app serving ``models`` (by name) until it shuts down; see :func:`zoo.serve.serve`."""
    _check_kinds(models)
    in_flight = _InFlight()
    limits = _Limits(max_body_bytes, body_timeout, max_inputs, max_text_chars, request_timeout,
                     tuple(Path(os.path.realpath(root)) for root in media_roots))
    served = {name: Served(name, model, Batcher(_runner(model, batch_size, max_audio_seconds), max_batch=max_batch,
                                                max_wait_ms=max_wait_ms, batch_size=batch_size, name=name,
                                                max_queue=max_queue))
              for name, model in models.items()}
    metrics = Metrics({name: entry.batcher for name, entry in served.items()})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for entry in served.values():
            entry.batcher.start()
        yield
        for entry in served.values():
            await entry.batcher.stop()

    async def health(request: Request) -> JSONResponse:
        dead = [name for name, entry in served.items() if not entry.batcher.alive]
        return JSONResponse({"status": "down" if dead else "ok", "models": list(served), "dead": dead,
                             "in_flight": in_flight.count}, status_code=503 if dead else 200)

    async def list_models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "zoo", "modality": entry.model.modality,
             "kind": entry.model.kind, "dimension": entry.model.embed_dim, "backend": entry.model.backend}
            for name, entry in served.items()]})

    async def show_metrics(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def embeddings(request: Request) -> JSONResponse:
        with in_flight:
            return await _embeddings(request, served, limits)

    async def rerank(request: Request) -> JSONResponse:
        with in_flight:
            return await _rerank(request, served, limits)

    routes = [Route("/health", health, methods=["GET"]), Route("/v1/models", list_models, methods=["GET"]),
              Route("/v1/embeddings", embeddings, methods=["POST"]), Route("/v1/rerank", rerank, methods=["POST"]),
              Route("/v2/rerank", rerank, methods=["POST"]), Route("/metrics", show_metrics, methods=["GET"])]
    handlers = {RequestError: _refused, HTTPException: _http_error, Exception: _crashed}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)  # type: ignore[arg-type]
    return Frontdoor(app, api_key=api_key, metrics=metrics)


async def _embeddings(request: Request, served: dict[str, Served], limits: _Limits) -> JSONResponse:
    """``POST /v1/embeddings``: OpenAI's request and response."""
    rules = ItemRules(get_registry().modality_of_media, limits.max_text_chars, limits.media_roots)
    parsed = parse_request(await _read_body(request, limits.max_body_bytes, limits.body_timeout), limits.max_inputs,
                           rules)
    entry = _served(served, parsed.model, ("embedder", "multi-vector"))
    request.state.model, request.state.inputs = entry.name, len(parsed.items)
    check_modality(parsed, entry.name, entry.model.towers)
    rows, tokens = await _within(limits.request_timeout, _embed(entry, parsed), entry.name)
    return JSONResponse(_response(entry, parsed, rows, tokens))


async def _rerank(request: Request, served: dict[str, Served], limits: _Limits) -> JSONResponse:
    """``POST /v1/rerank`` (and ``/v2/rerank``): Cohere's and Jina's request and response."""
    parsed = parse_rerank(await _read_body(request, limits.max_body_bytes, limits.body_timeout), limits.max_inputs,
                          limits.max_text_chars)
    entry = _served(served, parsed.model, ("reranker",))
    if entry.model.embed_dim != 1:
        raise RequestError(400, f"model {entry.name!r} gives {entry.model.embed_dim} scores per pair (a classifier of "
                           "pairs), not one relevance score to rank by", "model", "wrong_model_kind")
    request.state.model, request.state.inputs = entry.name, len(parsed.documents)
    scores, tokens = await _within(limits.request_timeout, _score(entry, parsed), entry.name)
    return JSONResponse(_ranking(entry, parsed, scores, tokens))


async def _within(seconds: float, work: Awaitable[T], name: str) -> T:
    """``work``'s answer, or 503 once ``seconds`` have passed since the body was read: the request's
    inputs leave the queue (a pass already running finishes for the others in it)."""
    try:
        return await asyncio.wait_for(work, seconds)
    except asyncio.TimeoutError:
        raise RequestError(503, f"{name} did not answer within {seconds:g} s (zoo serve --request-timeout): the "
                           "server is busier than it can serve; retry later, or with fewer inputs",
                           code="request_timeout", headers={"retry-after": "1"}) from None


async def _refused(request: Request, exc: RequestError) -> JSONResponse:
    request.state.error = exc.code or _KINDS.get(exc.status, str(exc.status))
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


# What a refusal without a code of its own is counted as (zoo_request_errors{kind}).
_KINDS = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 408: "body_timeout",
          413: "too_large", 500: "server_error", 503: "request_timeout"}


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Unknown paths and methods, in the same JSON shape as every other refusal."""
    message = (f"{request.method} {request.url.path}: {exc.detail}; zoo serve answers POST /v1/embeddings, "
               "POST /v1/rerank (and /v2/rerank), GET /v1/models and GET /health")
    headers = dict(exc.headers) if exc.headers else None
    return await _refused(request, RequestError(exc.status_code, message, headers=headers))


async def _crashed(request: Request, exc: Exception) -> JSONResponse:
    """A bug in the server: uvicorn logs the traceback; the client gets JSON, not a bare 500."""
    return await _refused(request, RequestError(500, f"the server failed: {type(exc).__name__}: {exc}"))


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes, and with 408 when the
    client sends nothing for ``timeout`` seconds (a stalled client holds no request forever)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body is {int(declared)} bytes; this server takes at most {limit} "
                           "(zoo serve --max-body-mb)")
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise RequestError(408, f"the body stopped arriving: nothing for {timeout:g} s (zoo serve "
                               "--body-timeout); send it whole") from None
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is over {limit} bytes, this server's limit (zoo serve --max-body-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_kinds(models: dict[str, Model]) -> None:
    """Refuse, before serving, a model whose kind has no route: its rows have no JSON shape here."""
    for name, model in models.items():
        if model.kind not in ("embedder", "multi-vector", "reranker"):
            raise UnsupportedModelKindError(
                f"{name} is {a_kind(model.kind)}: it {get_registry().kind(model.kind).description}; zoo serve "
                "answers /v1/embeddings with an embedder's dense vectors or a multi-vector model's token "
                "matrices, and /v1/rerank with a reranker's scores "
                "(embed a model of another kind with zoo embed, and search its rows with zoo index / zoo search)")


def _served(served: dict[str, Served], name: str, kinds: tuple[str, ...]) -> Served:
    """The served model ``name`` names, which must be of one of ``kinds`` (this route's)."""
    names = [name] if name in served else [n for n in served if served[n].model.spec.name == name
                                           or name in served[n].model.spec.aliases]
    if not names:
        raise RequestError(404, f"model {name!r} is not served here{did_you_mean(name, served)}; served: "
                           f"{', '.join(served)}", "model", "model_not_found")
    entry = served[names[0]]
    if entry.model.kind not in kinds:
        route = "/v1/rerank" if entry.model.kind == "reranker" else "/v1/embeddings"
        fitting = [n for n, e in served.items() if e.model.kind in kinds]
        raise RequestError(400, f"model {entry.name!r} is {a_kind(entry.model.kind)}: send it to {route}; this "
                           f"route takes {' or '.join(map(a_kind, kinds))} (served here: "
                           f"{', '.join(fitting) or 'none'})", "model", "wrong_model_kind")
    return entry


def _options(entry: Served, kind: str, dims: int | None, role: str | None) -> EmbedOptions:
    """The embedding options for ``kind`` items truncated to ``dims``, of ``role``, checked once
    per combination; a width the model was not trained for warns then (into the log, see ``serve``).
    A model that runs queries and documents through different code needs the role said."""
    width = entry.model.embed_dim
    if dims is not None and dims > width:
        raise RequestError(400, f"dimensions {dims} is more than {entry.name}'s {width}", "dimensions")
    if role is None and entry.model.search_role("query") is not None:
        raise RequestError(400, f"{entry.name} embeds queries and documents differently: say which these are, "
                           "with input_type 'query' or 'document'", "input_type")
    key = (kind, None if dims == width else dims, role)
    if key not in entry.options:
        try:
            entry.options[key] = entry.model.embed_options(tower=kind, truncate_dim=key[1], role=role)
        except ValueError as exc:  # UnsupportedOptionError included
            raise RequestError(400, f"dimensions {dims}: {exc}", "dimensions") from None
    return entry.options[key]


async def _embed(entry: Served, request: EmbeddingRequest) -> tuple[np.ndarray, int]:
    """Rows for every item, in order, and their token count: one batcher job per kind (texts,
    images...)."""
    import numpy as np

    kinds = sorted({kind for kind, _ in request.items})
    options = {kind: _options(entry, kind, request.dimensions, request.role) for kind in kinds}
    try:
        entry.batcher.admit(len(request.items))
    except QueueFull as full:  # the server is busy, not broken: the client retries (openai's client does, on 429)
        raise RequestError(429, f"{entry.name} is busy: {full}; retry after {full.retry_after} s (zoo serve "
                           "--max-queue)", code="queue_full", headers={"retry-after": str(full.retry_after)}) from None
    positions = {kind: [i for i, (k, _) in enumerate(request.items) if k == kind] for kind in kinds}

    async def rows_of(kind: str) -> tuple[np.ndarray, int]:
        try:
            return await entry.batcher.embed([request.items[i][1] for i in positions[kind]], (kind, options[kind]))
        except ItemError as exc:  # its index within this kind's items -> within the request
            raise ItemError(positions[kind][exc.index], exc.reason) from None

    parts = await asyncio.gather(*(rows_of(kind) for kind in kinds), return_exceptions=True)
    bad = sorted((p for p in parts if isinstance(p, ItemError)), key=lambda e: e.index)
    if bad:  # the first bad input of the request, whichever kind's pass ended first
        raise RequestError(400, f"input[{bad[0].index}]: {bad[0].reason}", f"input[{bad[0].index}]", "bad_input")
    answers = [p for p in parts if not isinstance(p, BaseException)]
    failed = next((p for p in parts if isinstance(p, BaseException)), None)
    if failed is not None:  # the batcher logged it with its traceback; the client hears what failed
        raise RequestError(500, f"{entry.name} failed on this request's batch: {type(failed).__name__}: "
                           f"{failed} (the server log has the traceback)", code="model_error",
                           headers={"x-should-retry": "false"})  # openai's client would run it twice more
    if len(kinds) == 1:  # one pass: its rows as they come (a multi-vector model's token matrices)
        return answers[0]
    out = np.empty((len(request.items), answers[0][0].shape[1]), dtype=np.float32)
    for kind, (rows, _) in zip(kinds, answers):
        out[positions[kind]] = rows
    return out, sum(int(tokens) for _, tokens in answers)


def _response(entry: Served, request: EmbeddingRequest, rows: np.ndarray, tokens: int) -> dict[str, Any]:
    import numpy as np

    if request.encoding_format == "base64":  # a token matrix: its (tokens, dim) values, row by row
        values: list[Any] = [base64.b64encode(np.ascontiguousarray(r, dtype="<f4").tobytes()).decode("ascii")
                             for r in rows]
    else:
        values = rows.tolist() if isinstance(rows, np.ndarray) else [r.tolist() for r in rows]
    return {"object": "list", "model": entry.name,
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(values)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def _score(entry: Served, request: RerankRequest) -> tuple[np.ndarray, int]:
    """Every document's score against the query, in order, and the pairs' token count."""
    pairs = [(request.query, document) for document in request.documents]
    try:
        entry.batcher.admit(len(pairs))
    except QueueFull as full:
        raise RequestError(429, f"{entry.name} is busy: {full}; retry after {full.retry_after} s (zoo serve "
                           "--max-queue)", code="queue_full", headers={"retry-after": str(full.retry_after)}) from None
    try:
        rows, tokens = await entry.batcher.embed(pairs, ("pairs",))
    except ItemError as exc:
        raise RequestError(400, f"documents[{exc.index}]: {exc.reason}", f"documents[{exc.index}]",
                           "bad_input") from None
    return rows[:, 0], tokens


def _ranking(entry: Served, request: RerankRequest, scores: np.ndarray, tokens: int) -> dict[str, Any]:
    """Cohere's and Jina's response shape: results best first, each its document's index and
    ``relevance_score`` (and ``document.text`` when asked)."""
    import uuid

    ranked = ranking(scores, range(len(scores)), request.documents, request.top_n)
    results = [{"index": r.index, "relevance_score": r.score,
                **({"document": {"text": r.document}} if request.return_documents else {})} for r in ranked]
    return {"id": str(uuid.uuid4()), "object": "rerank", "model": entry.name, "results": results,
            "usage": {"total_tokens": tokens}, "meta": {"billed_units": {"search_units": 1}}}
