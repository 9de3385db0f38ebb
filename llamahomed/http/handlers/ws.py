"""``GET /api/v1/ws``: many generations on one WebSocket; ``POST /api/v1/ws/ticket`` for browsers.

The upgrade is refused (a normal HTTP error in the envelope) unless the Origin is allowed and the
caller authenticated: an ``Authorization: Bearer`` header, or ``?ticket=`` with a single-use
ticket from ``POST /api/v1/ws/ticket`` (browsers cannot put headers on a WebSocket), valid for
``TICKET_TTL`` seconds.

Messages are JSON text. Client -> daemon::

    {"id": "a1", "prompt": "...", "model": ..., "max_tokens": ..., ...the process fields}
    {"cancel": "a1"}

Daemon -> client, for each request (several may run at once, their messages interleave)::

    {"id": "a1", "chunk": "Hello", "index": 0}
    {"id": "a1", "done": true, "usage": {...}, "finish_reason": "length", "model": ..., "created": ...}
    {"id": "a1", "error": {"code", "message", "details"}}        instead of ``done``

A cancelled request ends with ``done`` and ``finish_reason: "cancelled"``. Closing the socket
cancels everything it has in flight at the worker's next step.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import structlog
from aiohttp import WSMsgType, web
from llamahome.auth import TokenClaims
from pydantic import ValidationError

from llamahomed.core.errors import (
    AuthenticationFailed,
    InvalidRequest,
    LlamaHomeError,
    ServerBusy,
    ValidationFailed,
)
from llamahomed.http.access import insufficient_scope
from llamahomed.http.keys import AUTHORITY, CLAIMS, CONFIG, INFERENCE
from llamahomed.http.guard import socket_slot, stream_slot
from llamahomed.http.ratelimit import LIMIT, RequestLimit, charge, meter, refusal
from llamahomed.http.redact import for_client
from llamahomed.http.render.native import NativeLines
from llamahomed.http.schemas import loads
from llamahomed.service.generation import Generation
from llamahomed.service.options import PromptOptions, validation_details

log = structlog.get_logger(__name__)

TICKET_TTL = 30.0
MAX_TICKETS = 10_000
MAX_IN_FLIGHT = 32
MAX_ID_LENGTH = 128
HEARTBEAT_S = 30.0
FINAL_MESSAGE_GRACE = 2.0  # seconds for the last messages before a shutdown closes sockets
WS_POLICY_VIOLATION = 1008  # RFC 6455: the close code for a lapsed token

RequestId = Union[str, int]


class WsRequest(PromptOptions):
    """One generation asked for over the socket (``id`` is taken off before validation)."""


class TicketBook:
    """Single-use WebSocket tickets: random, kept only as a hash, valid ``ttl`` seconds."""

    def __init__(self, ttl: float = TICKET_TTL, limit: int = MAX_TICKETS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self._limit, self._clock = ttl, limit, clock
        self._tickets: dict[str, tuple[TokenClaims, float]] = {}

    @staticmethod
    def _key(ticket: str) -> str:
        return hashlib.sha256(ticket.encode()).hexdigest()

    def _purge(self) -> None:
        now = self._clock()
        for key in [k for k, (_, expires) in self._tickets.items() if expires <= now]:
            del self._tickets[key]

    def issue(self, claims: TokenClaims) -> str:
        """A new ticket standing for ``claims`` once, for ``ttl`` seconds."""
        self._purge()
        if len(self._tickets) >= self._limit:
            raise ServerBusy("too many unused WebSocket tickets; retry in a few seconds",
                             details={"retry_after": int(self.ttl)},
                             headers={"Retry-After": str(int(self.ttl))})
        ticket = secrets.token_urlsafe(32)
        expires = self._clock() + self.ttl
        if claims.expires_at is not None:  # never outlive the token it was bought with
            expires = min(expires, self._clock() + max(0.0, claims.expires_at - time.time()))
        self._tickets[self._key(ticket)] = (claims, expires)
        return ticket

    def redeem(self, ticket: str) -> TokenClaims:
        """The ticket's claims; it cannot be used again. AuthenticationFailed if unknown or old."""
        entry = self._tickets.pop(self._key(ticket), None)
        if entry is None or entry[1] <= self._clock():
            raise AuthenticationFailed("invalid, expired or already used WebSocket ticket; "
                                       "get a new one from POST /api/v1/ws/ticket")
        return entry[0]


@dataclass
class WsHub:
    """What the WebSocket routes share: the ticket book and the open sockets."""

    tickets: TicketBook = field(default_factory=TicketBook)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    sessions: set[Session] = field(default_factory=set)


WS_HUB = web.AppKey("ws_hub", WsHub)


def setup(app: web.Application) -> None:
    """Shared state, and closing every socket when the daemon shuts down."""
    app[WS_HUB] = WsHub()
    app.on_shutdown.append(close_all)


async def close_all(app: web.Application) -> None:
    """Shutdown, after the drain: let each socket's last messages (a final ``shutting_down``
    per id) go out, then close it with 1001."""
    hub = app[WS_HUB]
    pending = [task for session in hub.sessions for task in session.tasks()]
    if pending:
        await asyncio.wait(pending, timeout=FINAL_MESSAGE_GRACE)
    for ws in list(hub.sockets):
        await ws.close(code=1001, message=b"server shutting down")


def _authenticate(request: web.Request) -> TokenClaims:
    header = request.headers.get("Authorization")
    given = request.query.get("ticket")
    if header or not given:
        return request.app[AUTHORITY].check(header)
    claims = request.app[WS_HUB].tickets.redeem(given)
    request.app[AUTHORITY].recheck(claims)  # a ticket dies with the token it was bought with
    return claims


async def ticket(request: web.Request) -> web.Response:
    """A single-use ticket for a browser's WebSocket (the bearer token was checked already)."""
    hub = request.app[WS_HUB]
    value = hub.tickets.issue(request[CLAIMS])
    return web.json_response({"ticket": value, "expires_in": hub.tickets.ttl})


async def websocket(request: web.Request) -> web.StreamResponse:
    # Host and Origin were checked by the guard middleware (check_origin) before this runs.
    claims = request[CLAIMS] = _authenticate(request)
    if not claims.has_scope("inference"):
        raise insufficient_scope("inference")
    decision = charge(request.app, claims)  # an upgrade is a request like any other
    if decision is not None:
        request[LIMIT] = RequestLimit(claims.user_id, decision)  # its rate-limit headers
        if not decision.allowed:
            raise refusal(decision)
    with socket_slot(request.app, claims):
        return await _serve(request, claims)


async def _serve(request: web.Request, claims: TokenClaims) -> web.StreamResponse:
    settings = request.app[CONFIG].settings
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=settings.max_body_bytes)
    if not ws.can_prepare(request).ok:
        raise InvalidRequest("this route is a WebSocket: send a GET with 'Connection: Upgrade' "
                             "and 'Upgrade: websocket'")
    await ws.prepare(request)
    hub = request.app[WS_HUB]
    hub.sockets.add(ws)
    session = Session(request, ws)
    hub.sessions.add(session)
    expiry = None
    if claims.expires_at is not None:  # the socket ends when its token does
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, claims.expires_at - time.time()),
            lambda: asyncio.ensure_future(session.lapse("the token has expired")))
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await session.receive(message.data)
            elif message.type == WSMsgType.BINARY:
                await session.send_error(None, InvalidRequest("send JSON as text messages"))
    finally:
        if expiry is not None:
            expiry.cancel()
        hub.sockets.discard(ws)
        hub.sessions.discard(session)
        await session.close()
    return ws


@dataclass
class _Running:
    task: asyncio.Task[None]
    generation: Generation | None = None
    cancel_requested: bool = False


class Session:
    """One socket's requests in flight, each a task feeding the shared batcher."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self._request = request
        self._ws = ws
        self._running: dict[RequestId, _Running] = {}
        self._send_lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            if not self._ws.closed:
                await self._ws.send_str(json.dumps(message, ensure_ascii=False))

    async def send_error(self, request_id: RequestId | None, error: LlamaHomeError) -> None:
        await self.send({"id": request_id, **for_client(error, self._request).envelope()})

    async def _reply_error(self, request_id: RequestId | None, error: LlamaHomeError) -> None:
        await self._safe(self.send_error(request_id, error))

    async def _safe(self, sending: Any) -> None:
        try:
            await sending
        except (ConnectionError, RuntimeError):
            pass  # the socket went away; its close cancels everything anyway

    async def receive(self, raw: str) -> None:
        """Start or cancel a request; every mistake answers with an error message, never a close."""
        try:
            data = loads(raw, "the message")
        except InvalidRequest as exc:
            return await self._reply_error(None, exc)
        if not isinstance(data, dict):
            return await self._reply_error(None, InvalidRequest("a message must be a JSON object"))
        if "cancel" in data:
            return await self._cancel(data["cancel"])
        request_id = data.pop("id", None)
        if not _valid_id(request_id):
            return await self._reply_error(None, InvalidRequest(
                f"every request needs an 'id': a string of 1 to {MAX_ID_LENGTH} characters "
                "or an integer", details={"id": request_id if _jsonable_id(request_id) else None}))
        if request_id in self._running:
            return await self._reply_error(request_id, InvalidRequest(
                f"request id {request_id!r} is already in flight on this socket"))
        if len(self._running) >= MAX_IN_FLIGHT:
            return await self._reply_error(request_id, InvalidRequest(
                f"at most {MAX_IN_FLIGHT} requests may be in flight on one socket",
                details={"max_in_flight": MAX_IN_FLIGHT}))
        try:
            body = WsRequest.model_validate(data)
        except ValidationError as exc:
            details = validation_details(exc)
            fields = ", ".join(e["field"] for e in details["errors"])
            return await self._reply_error(request_id, ValidationFailed(
                f"invalid request field(s): {fields}", details=details))
        try:  # revoked or expired since the upgrade: this request is refused, the socket closed
            self._request.app[AUTHORITY].recheck(self._request[CLAIMS])
        except AuthenticationFailed as exc:
            await self._reply_error(request_id, exc)
            return await self.lapse(exc.message)
        decision = charge(self._request.app, self._request[CLAIMS])  # like an HTTP request
        if decision is not None and not decision.allowed:
            return await self._reply_error(request_id, refusal(decision))
        task = asyncio.create_task(self._run(request_id, body))
        self._running[request_id] = _Running(task)
        task.add_done_callback(lambda _: self._running.pop(request_id, None))
        return None

    async def _cancel(self, request_id: Any) -> None:
        running = self._running.get(request_id) if _valid_id(request_id) else None
        if running is None:
            return await self._reply_error(request_id if _jsonable_id(request_id) else None,
                                     InvalidRequest("no request with this id is in flight"))
        running.cancel_requested = True
        if running.generation is not None:  # the worker answers with a "cancelled" done event
            await running.generation.stop()
        else:  # still waiting for a slot or a model load
            running.task.cancel()
        return None

    async def _run(self, request_id: RequestId, body: WsRequest) -> None:
        app = self._request.app
        running = self._running[request_id]
        generation: Generation | None = None
        try:
            claims = self._request[CLAIMS]
            with stream_slot(app, claims):  # the same cap as every other stream
                turns = body.turns()
                generation = await app[INFERENCE].generate(
                    body, prompt=body.prompt, messages=turns,
                    system=None if turns is not None else body.system,
                    raw=body.raw and turns is None, meter=meter(app, claims),
                    may_reload=claims.has_scope("admin"), owner=claims.user_id,
                    keep_alive=body.keep_alive)
                running.generation = generation
                if running.cancel_requested:  # asked while the worker was checking the prompt
                    await generation.stop()
                lines = NativeLines(lambda error: for_client(error, self._request))
                async for event in generation.events():
                    await self.send({"id": request_id, **lines.render(event)})
        except LlamaHomeError as exc:
            await self._safe(self.send_error(request_id, exc))
        except asyncio.CancelledError:
            if running.cancel_requested and not self._ws.closed:
                await self._safe(self.send({
                    "id": request_id, "done": True, "finish_reason": "cancelled",
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}))
            else:
                raise
        except (ConnectionError, RuntimeError):
            pass  # the socket closed under us; close() cancels the sequence
        except Exception:  # noqa: BLE001 - one request's bug must not take the socket down
            log.exception("ws_request_failed")
            await self._safe(self.send_error(request_id, LlamaHomeError(
                "internal error; the daemon log has the details")))
        finally:
            if generation is not None:
                await generation.close()

    def tasks(self) -> list[asyncio.Task[None]]:
        """The requests in flight on this socket."""
        return [running.task for running in self._running.values()]

    async def lapse(self, why: str) -> None:
        """The token lapsed: close the socket (1008, with the reason); in-flight requests end."""
        if not self._ws.closed:
            await self._ws.close(code=WS_POLICY_VIOLATION, message=why.encode()[:120])

    async def close(self) -> None:
        """The socket is gone: cancel every request in flight (their sequences stop next step)."""
        tasks = [running.task for running in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 2**63
    return isinstance(value, str) and 1 <= len(value) <= MAX_ID_LENGTH


def _jsonable_id(value: Any) -> bool:
    return value is None or _valid_id(value)
