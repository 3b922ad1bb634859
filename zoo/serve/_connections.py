"""What uvicorn leaves unbounded before a request reaches the app: how long a client may take to
send a request's headers, and how many bytes of them it may send.

uvicorn's ``timeout_keep_alive`` covers only the idle time between requests, and any byte received
disarms it, so a client that opens a connection and sends a partial request line, or one header
byte a second, holds the connection (and a file descriptor) forever; an ASGI middleware never
sees such a request. :func:`guarded_protocol` wraps the HTTP protocol uvicorn would pick (httptools
where installed, else h11) with a deadline for each request's headers, counted from the moment the
connection opens or the previous answer ends, and a bound on their size. The body has its own
deadline in the app (``--body-timeout``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

if TYPE_CHECKING:  # what the guard calls on: h11's and httptools' protocols have the same methods
    from uvicorn.protocols.http.h11_impl import H11Protocol as _UvicornHTTP
else:
    _UvicornHTTP = object

access_log = logging.getLogger("zoo.serve.access")


class _HeaderGuard(_UvicornHTTP):
    """Mixed in before uvicorn's HTTP protocol: a header deadline and a header size bound (set on
    the class :func:`guarded_protocol` makes)."""

    header_timeout: float = 10.0
    max_header_bytes: int = 64 << 10
    refused: Callable[[str], None] = staticmethod(lambda kind: None)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn
        super().connection_made(transport)
        self._head_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # The parser sees at most one byte past the bound of a head still open (a chunk may hold the
        # end of the headers and a body, which must not count): still open then, it is too large.
        room = self.max_header_bytes - self._head_bytes + 1
        if self._awaiting_head() and len(data) > room:
            self._feed(data[:room])
            if self.transport.is_closing():
                return
            if self._awaiting_head():
                self._refuse(431, "header_too_large", f"the request's headers are over {self.max_header_bytes >> 10} "
                                                      "KiB (zoo serve --max-header-kb)")
                return
            data = data[room:]
        if data:  # h11 reads an empty chunk as the end of the stream
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():  # uvicorn refused it (a malformed request: 400)
            self._disarm()
        elif self._awaiting_head():
            self._head_bytes += len(data)
        elif self._deadline is not None:
            self._disarm()  # the headers are in: the body has --body-timeout

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self._awaiting_head():  # not a pipelined request already read
            self._arm()

    def _awaiting_head(self) -> bool:
        """No request of this connection is being answered: the next one's headers are due."""
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._head_bytes = 0
        self._deadline = self.loop.call_later(self.header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        handed_on = self.transport.get_protocol() is not self  # upgraded to a websocket
        if handed_on or self.transport.is_closing() or not self._awaiting_head():
            return
        if self._head_bytes == 0:  # an idle connection: nothing to answer, as after keep-alive
            self.transport.close()
            return
        self._refuse(408, "header_timeout", f"the request's headers did not arrive within {self.header_timeout:g} s "
                                            "(zoo serve --header-timeout); send them whole")

    def _refuse(self, status: int, kind: str, message: str) -> None:
        """Answer in OpenAI's error shape, close the connection, and count it (no request exists
        for the app to log)."""
        self._disarm()
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": kind}}).encode()
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%s" % (status, reason, len(body), body))
        self.transport.close()
        self.refused(kind)
        access_log.info(json.dumps({"request_id": None, "status": status, "error": kind,
                                    "client": (self.client or [None])[0]}))


def guarded_protocol(*, header_timeout: float, max_header_bytes: int, refused: Callable[[str], None],
                     http: str = "auto") -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``: uvicorn's ``http`` one ("auto": httptools
    where installed, else h11), where headers not complete ``header_timeout`` seconds after the
    connection opened (or its previous answer ended) get a 408 and the connection closes, and more
    than ``max_header_bytes`` of them a 431. ``refused(kind)`` counts each."""
    base = import_from_string(HTTP_PROTOCOLS[http])
    settings: dict[str, Any] = {"header_timeout": header_timeout, "max_header_bytes": max_header_bytes,
                                "refused": staticmethod(refused)}
    return type(f"Guarded{base.__name__}", (_HeaderGuard, base), settings)
