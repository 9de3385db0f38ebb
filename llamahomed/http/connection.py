"""Connection guards under aiohttp's HTTP parser: timeouts, connection caps, and the envelope
for requests too malformed to reach a handler.

aiohttp closes idle keep-alive connections (``keepalive_timeout``, which also covers a fresh
connection that sends nothing) but has no header or body timeout, and its
``RequestHandler.handle_error`` answers parser errors in ``text/plain`` with the parser's
message, which echoes the offending bytes (a token from a header line, prompt bytes from a bad
chunk) and logs them with a traceback. Middlewares cannot help: they only see requests the
parser finished. So the daemon serves its app with :class:`GuardedRunner`, an ``AppRunner``
whose server builds :class:`GuardedHandler` protocols, a ``RequestHandler`` subclass. It is the
least invasive place that sees every byte: one extra timer per connection, two counters, and an
override of ``handle_error``; aiohttp's parser, keep-alive logic and request flow are untouched.

Each connection is in one of four phases, and one watchdog timer guards the phase:

============ ============================================ ===================================
phase        when                                         limit
============ ============================================ ===================================
idle         fresh, or between two requests               ``keepalive_timeout`` (aiohttp's)
headers      the first byte of a request arrived          ``header_timeout``
body         headers parsed, the body not all in          ``body_timeout`` (whole body)
handling     the handler runs (a stream, a WebSocket)     none: a response is never idle
============ ============================================ ===================================

A connection over its phase's limit is closed without an answer (a client this slow would not
read one). A new connection beyond ``max_connections_per_peer`` (one peer address) or
``max_connections`` (all together) gets a ``503 server_busy`` envelope and is closed at once,
before aiohttp sees it. Limits are read for each new connection, so a reload applies to the next
one.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from llamahomed.core.errors import InvalidRequest, LlamaHomeError, ServerBusy
from llamahomed.core.settings import Settings
from llamahomed.http.middleware import SERVER

log = structlog.get_logger(__name__)

IDLE, HEADERS, BODY, HANDLING = "idle", "headers", "body", "handling"
MALFORMED = "malformed HTTP request"


def _raw_response(error: LlamaHomeError) -> bytes:
    """A whole HTTP/1.1 response carrying ``error``'s envelope, for before aiohttp is involved."""
    body = json.dumps(error.envelope()).encode()
    head = (f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\nServer: {SERVER}\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
    return head.encode() + body


_BUSY = _raw_response(ServerBusy("too many open connections; close one or retry later",
                                 details={"retry_after": 1}))


class ConnectionLimits:
    """Open connections, in total and per peer address, against the settings' caps."""

    def __init__(self, settings: Callable[[], Settings]) -> None:
        self.settings = settings
        self.total = 0
        self.per_peer: dict[str, int] = {}

    def admit(self, peer: str) -> bool:
        """Count one more connection from ``peer``; False (nothing counted) when over a cap."""
        current = self.settings()
        held = self.per_peer.get(peer, 0)
        if self.total >= current.max_connections or held >= current.max_connections_per_peer:
            return False
        self.total += 1
        self.per_peer[peer] = held + 1
        return True

    def release(self, peer: str) -> None:
        self.total -= 1
        left = self.per_peer.get(peer, 1) - 1
        if left > 0:
            self.per_peer[peer] = left
        else:
            self.per_peer.pop(peer, None)


def _peer_of(transport: asyncio.BaseTransport) -> str:
    peername = transport.get_extra_info("peername")
    if isinstance(peername, (tuple, list)) and peername:
        return str(peername[0])
    return str(peername or "unknown")


class GuardedHandler(RequestHandler):
    """aiohttp's per-connection protocol plus the watchdog, the caps and the envelope."""

    def __init__(self, manager: web.Server, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        current = limits.settings()
        self._header_timeout = current.header_timeout
        self._body_timeout = current.body_timeout
        self._peer: str | None = None  # set while counted against the caps
        self._phase = IDLE
        self._watchdog: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None

    # -- caps ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = _peer_of(transport)
        if not self._limits.admit(peer):
            log.debug("connection_refused", peer=peer, open=self._limits.total)
            assert isinstance(transport, asyncio.Transport)
            transport.write(_BUSY)
            transport.close()
            return
        self._peer = peer
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._peer is None:
            return  # refused in connection_made: aiohttp never saw this connection
        self._limits.release(self._peer)
        self._peer = None
        super().connection_lost(exc)

    # -- the watchdog ----------------------------------------------------------------------
    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _enter(self, phase: str, timeout: float | None = None) -> None:
        self._disarm()
        self._phase = phase
        if timeout is not None:
            self._watchdog = self._loop.call_later(timeout, self._expire, phase, timeout)

    def _expire(self, phase: str, timeout: float) -> None:
        self._watchdog = None
        if self._phase != phase or self._upgraded:
            return
        if phase == BODY and (self._body is None or self._body.is_eof()):
            self._enter(HANDLING)
            return
        log.info("connection_timeout", phase=phase, timeout=timeout, peer=self._peer)
        self.force_close()

    def data_received(self, data: bytes) -> None:
        if self._phase == IDLE and data and not self._upgraded:
            self._enter(HEADERS, self._header_timeout)
            # aiohttp's keep-alive timer must not cut a request that has begun to arrive.
            self._next_keepalive_close_time = max(self._next_keepalive_close_time,
                                                  self._loop.time() + self._header_timeout)
        parsed = self._request_count
        super().data_received(data)
        if self._phase == HEADERS and self._request_count != parsed:
            payload = self._messages[-1][1] if self._messages else None
            if self._upgraded or payload is None or payload.is_eof():
                self._enter(HANDLING)
            else:
                self._body = payload
                self._enter(BODY, self._body_timeout)
        elif self._phase == BODY and self._body is not None and self._body.is_eof():
            self._enter(HANDLING)

    async def finish_response(self, request: BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._body = None
            self._enter(IDLE)

    # -- errors aiohttp answers itself -----------------------------------------------------
    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """The envelope, never the parser's message (it echoes the bad bytes), and a log line
        naming only the error's type."""
        if request.writer.output_size > 0:
            raise ConnectionError("a response is already under way; cannot send an error")
        error: LlamaHomeError
        if status < 500:
            log.info("malformed_request", status=status, peer=self._peer,
                     error=type(exc).__name__ if exc else None)
            error = InvalidRequest(MALFORMED)
        else:
            log.error("protocol_error", status=status, peer=self._peer,
                      error=type(exc).__name__ if exc else None)
            error = LlamaHomeError("internal error; the daemon log has the details")
        response = web.json_response(error.envelope(), status=error.status,
                                     headers={"Server": SERVER})
        response.force_close()
        return response


class GuardedServer(web.Server):
    """aiohttp's low-level server, making :class:`GuardedHandler` protocols."""

    def __init__(self, handler: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits

    def __call__(self) -> RequestHandler:
        kwargs = {**self._kwargs, "keepalive_timeout": self.limits.settings().keepalive_timeout}
        return GuardedHandler(self, limits=self.limits, loop=self._loop, **kwargs)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` serving the app through :class:`GuardedServer`."""

    def __init__(self, app: web.Application, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return GuardedServer(base.request_handler, limits=self.limits,
                             request_factory=base.request_factory,
                             handler_cancellation=base.handler_cancellation,
                             loop=base._loop, **base._kwargs)
