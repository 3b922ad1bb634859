"""What every request passes on its way in and out of ``zoo serve``: its id, the API key, one
structured access-log line, and the Prometheus metrics (``GET /metrics``).

A pure ASGI middleware, so a refusal here (401) costs no routing, and the id, log line and
metrics cover every answer, the refusals of the handlers and the server's own failures included.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._batcher import Batcher

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("zoo.serve.access")

# A client's own X-Request-Id is kept when it is a plain token; anything else gets a fresh one.
_CLIENT_ID = re.compile(r"[\w.:-]{1,128}")
# The paths metrics are labelled with; any other is "other", so a scan cannot grow the label set.
ROUTES = ("/v1/embeddings", "/v1/models", "/health", "/metrics")
OPEN_PATHS = ("/health",)  # answered without the API key: what a load balancer probes


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (two apps in one process, as in
    tests, do not share counters)."""

    def __init__(self, batchers: dict[str, Batcher]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("zoo_requests", "HTTP requests answered, by path and status", ["path", "status"],
                                registry=self.registry)
        self.errors = Counter("zoo_request_errors", "requests refused or failed, by kind (the error code)", ["kind"],
                              registry=self.registry)
        self.inputs = Counter("zoo_inputs", "inputs embedded, by model", ["model"], registry=self.registry)
        self.seconds = Histogram("zoo_request_seconds", "time to answer, by path", ["path"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        queued = Gauge("zoo_queue_inputs", "inputs queued or in a forward pass, by model", ["model"],
                       registry=self.registry)
        passes = Gauge("zoo_forward_passes", "forward passes run since start, by model", ["model"],
                       registry=self.registry)
        for name, batcher in batchers.items():
            queued.labels(name).set_function(functools.partial(getattr, batcher, "waiting"))
            passes.labels(name).set_function(functools.partial(getattr, batcher, "passes"))

    def record(self, path: str, status: int, seconds: float, state: dict[str, Any]) -> None:
        route = path if path in ROUTES else "other"
        self.requests.labels(route, str(status)).inc()
        self.seconds.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(state.get("error") or str(status)).inc()
        elif state.get("model") and state.get("inputs"):
            self.inputs.labels(state["model"]).inc(state["inputs"])

    def refused(self, kind: str) -> None:
        """Count a connection refused before its request reached the app (a header deadline)."""
        self.errors.labels(kind).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Frontdoor:
    """Gives each request an id (``x-request-id`` on every answer), refuses a missing or wrong API
    key with OpenAI's 401, and writes one JSON access-log line and the metrics per request."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began, status = time.perf_counter(), 500
        state = scope.setdefault("state", {})
        state["request_id"] = request_id = _request_id(scope)

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            if self.key is not None and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
                state["error"] = "invalid_api_key"
                await _unauthorized(answer)
            else:
                await self.app(scope, receive, answer)
        finally:
            seconds = time.perf_counter() - began
            self.metrics.record(scope["path"], status, seconds, state)
            access_log.info(json.dumps({
                "request_id": request_id, "method": scope["method"], "path": scope["path"], "status": status,
                "ms": round(seconds * 1000, 1), "model": state.get("model"), "inputs": state.get("inputs"),
                "error": state.get("error"), "client": (scope.get("client") or [None])[0]}))

    def _authorized(self, scope: Scope) -> bool:
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        # compare_digest: the time taken does not say how much of a guess was right
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key or b"")


def _request_id(scope: Scope) -> str:
    given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
    return given if _CLIENT_ID.fullmatch(given) else uuid.uuid4().hex


async def _unauthorized(send: Send) -> None:
    """OpenAI's answer to a wrong key, which its clients raise as ``AuthenticationError``."""
    body = json.dumps({"error": {"message": "Incorrect API key provided: send it as 'Authorization: Bearer KEY' "
                                            "(zoo serve --api-key or ZOO_API_KEY)",
                                 "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b"Bearer")]})
    await send({"type": "http.response.body", "body": body})
