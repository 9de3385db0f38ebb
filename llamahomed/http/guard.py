"""The hardened surface: bind policy, header size, Host and Origin allowlists, CORS, stream caps.

Runs right after the error middleware and before authentication, so a forged ``Host`` (DNS
rebinding) or a foreign ``Origin`` is refused before anything else looks at the request, and a
CORS preflight (which carries no token) is answered here.

- ``Host`` must name loopback (``localhost``, ``127.0.0.1``, ``[::1]``) with the port the daemon
  listens on, the bound address, or an entry of ``allowed_hosts`` (``*``: any).
- ``Origin``, when a browser sends one, must be the daemon's own (``scheme://Host``, the Host
  having passed the check above: the web console at ``/ui/``) or in ``allowed_origins`` (empty
  by default); :func:`check_origin` is the one function that decides, for HTTP and for
  WebSocket handshakes.
- CORS headers go only to allowed origins, never ``*``, never ``Allow-Credentials``: there is
  no cookie auth anywhere.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Awaitable, Callable, Iterator

import structlog
from aiohttp import web
from llamahome.auth import TokenClaims

from llamahomed.core.errors import (
    HeadersTooLarge,
    HostNotAllowed,
    OriginNotAllowed,
    StartupError,
    TooManyStreams,
)
from llamahomed.core.settings import Settings
from llamahomed.http.keys import CONFIG

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = frozenset({"authorization", "content-type", "x-request-id"})
CORS_EXPOSE = ("x-request-id, retry-after, retry-after-ms, ratelimit, ratelimit-policy, "
               "x-ratelimit-limit-requests, x-ratelimit-remaining-requests, "
               "x-ratelimit-reset-requests")
CORS_MAX_AGE = "600"


class StreamCounter:
    """What each token subject (user) holds open: streams (of every dialect and transport)
    and WebSockets, each under its own cap."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}
        self.sockets: dict[str, int] = {}

    @contextlib.contextmanager
    def hold(self, table: dict[str, int], subject: str, limit: int, what: str) -> Iterator[None]:
        """One more of ``what`` for ``subject``; 429 ``too_many_streams`` past ``limit``."""
        current = table.get(subject, 0)
        if current >= limit:
            raise TooManyStreams(
                f"this token's user already has {current} {what} open (limit {limit}); "
                "finish or cancel one first",
                details={"limit": limit, "open": current, "retry_after": 1},
                headers={"Retry-After": "1"})
        table[subject] = current + 1
        try:
            yield
        finally:
            left = table.get(subject, 1) - 1
            if left > 0:
                table[subject] = left
            else:
                table.pop(subject, None)


STREAMS = web.AppKey("streams", StreamCounter)


# -- bind policy ---------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Whether a bind address is loopback-only (``localhost`` or a loopback IP)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def bind_host(host: str) -> str:
    """The address to bind: an IPv6 literal without the brackets a URL needs (``[::1]`` ->
    ``::1``)."""
    return host.strip().removeprefix("[").removesuffix("]")


def url_host(host: str) -> str:
    """The host as a URL names it: an IPv6 literal in brackets (``::1`` -> ``[::1]``)."""
    bare = bind_host(host)
    return f"[{bare}]" if ":" in bare else bare


def check_bind(settings: Settings, *, warn: bool = True) -> None:
    """Refuse a non-loopback bind unless ``allow_remote`` is set; warn when it is."""
    if is_loopback(settings.host):
        return
    if not settings.allow_remote:
        raise StartupError(
            f"refusing to listen on {settings.host}: it is reachable from other machines; "
            "set allow_remote = true (LLAMAHOME_ALLOW_REMOTE=1) to allow it")
    if warn:
        log.warning("remote_bind", host=settings.host,
                    message="listening beyond loopback: every request still needs a token; "
                            "add the names clients use to allowed_hosts")


# -- Host ----------------------------------------------------------------------------------
def split_host(value: str) -> tuple[str, int | None]:
    """``name`` and ``port`` of a Host header value (``[::1]:8910`` -> ``("[::1]", 8910)``)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value.partition("]")
        name += "]"
        port_text = rest[1:] if rest.startswith(":") else ("" if not rest else "x")
    elif value.count(":") == 1:
        name, _, port_text = value.partition(":")
    else:
        name, port_text = value, ""
    name = name.rstrip(".")
    if port_text == "":
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in Host header: {port_text!r}")
    return name, int(port_text)


def _local_port(request: web.Request) -> int | None:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return int(sockname[1])
    return None


def host_allowed(request: web.Request, settings: Settings) -> bool:
    """Whether the request's ``Host`` is one this daemon answers to."""
    if "*" in settings.allowed_hosts:
        return True
    raw = request.headers.get("Host", "")
    try:
        name, port = split_host(raw)
    except ValueError:
        return False
    if not name:
        return False
    configured = {entry.strip().lower().rstrip(".") for entry in settings.allowed_hosts}
    if raw.strip().lower() in configured or name in configured:
        return True
    local = {*LOOPBACK_NAMES}
    if not is_loopback(settings.host) and bind_host(settings.host) not in ("0.0.0.0", "::"):
        local.add(url_host(settings.host).lower())
    if name not in local:
        return False
    listening = _local_port(request)
    return listening is None or (port or 80) == listening


def check_host(request: web.Request) -> None:
    """403 ``host_not_allowed`` unless the ``Host`` header is allowed (DNS-rebinding guard)."""
    if not host_allowed(request, request.app[CONFIG].settings):
        raise HostNotAllowed(
            "this Host header is not allowed (DNS-rebinding protection); use localhost, "
            "127.0.0.1 or [::1] with the daemon's port, or add the name to allowed_hosts",
            details={"host": request.headers.get("Host", "")[:200]})


# -- Origin and CORS -----------------------------------------------------------------------
def _normalise_origin(origin: str) -> str:
    return origin.strip().lower().rstrip("/")


def origin_allowed(origin: str, settings: Settings) -> bool:
    allowed = {_normalise_origin(o) for o in settings.allowed_origins}
    return _normalise_origin(origin) in allowed


def check_origin(request: web.Request) -> str | None:
    """The request's allowed ``Origin``, None if it sent none, or 403 ``origin_not_allowed``.

    Use it for every browser-reachable entry point, WebSocket handshakes included (browsers
    always send ``Origin`` on a WebSocket upgrade; other clients usually send none).
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    own = f"{request.scheme}://{request.host}".lower()  # the console's page: same origin
    if _normalise_origin(origin) != own and not origin_allowed(origin, request.app[CONFIG].settings):
        raise OriginNotAllowed(
            "this Origin is not allowed; add it to allowed_origins to let that web page call the API",
            details={"origin": origin[:200]})
    return origin


def _preflight(request: web.Request, origin: str) -> web.Response:
    asked = {h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers",
                                                            "").split(",") if h.strip()}
    return web.Response(status=204, headers={
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": CORS_METHODS,
        "Access-Control-Allow-Headers": ", ".join(sorted(asked & CORS_HEADERS)) or "authorization",
        "Access-Control-Max-Age": CORS_MAX_AGE,
        "Vary": "Origin",
    })


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: CORS headers on every response to an allowed origin, streams too."""
    origin = request.headers.get("Origin")
    if origin and "Access-Control-Allow-Origin" not in response.headers \
            and origin_allowed(origin, request.app[CONFIG].settings):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
        response.headers.add("Vary", "Origin")


# -- limits --------------------------------------------------------------------------------
def check_header_size(request: web.Request, settings: Settings) -> None:
    size = sum(len(k) + len(v) + 4 for k, v in request.raw_headers)
    if size > settings.max_header_bytes:
        raise HeadersTooLarge(
            f"the request headers total {size} bytes, over the limit of {settings.max_header_bytes}",
            details={"limit": settings.max_header_bytes, "size": size})


@contextlib.contextmanager
def stream_slot(app: web.Application, claims: TokenClaims | None) -> Iterator[None]:
    """Hold one of the token subject's ``max_streams_per_token`` slots while a generation
    streams: NDJSON, OpenAI SSE and WebSocket generations alike (429 when none is free)."""
    if claims is None:
        yield
        return
    limit = app[CONFIG].settings.system_settings.max_streams_per_token
    counter = app[STREAMS]
    with counter.hold(counter.open, claims.user_id, limit, "streams"):
        yield


@contextlib.contextmanager
def socket_slot(app: web.Application, claims: TokenClaims) -> Iterator[None]:
    """Hold one of the token subject's ``max_sockets_per_token`` WebSockets."""
    limit = app[CONFIG].settings.system_settings.max_sockets_per_token
    counter = app[STREAMS]
    with counter.hold(counter.sockets, claims.user_id, limit, "WebSockets"):
        yield


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Header size, Host, Origin (and CORS preflight), before authentication."""
    settings = request.app[CONFIG].settings
    check_header_size(request, settings)
    check_host(request)
    origin = check_origin(request)
    if (origin is not None and request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers):
        return _preflight(request, origin)
    return await handler(request)


def setup_guard(app: web.Application) -> None:
    """What the guard needs besides its middleware: the stream counter and CORS headers."""
    app[STREAMS] = StreamCounter()
    app.on_response_prepare.append(add_cors_headers)
