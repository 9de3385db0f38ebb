"""Default deny: every route needs a valid bearer token, and a scope, unless it is public.

A handler states the scope it needs with ``@requires_scope("inference")``; a route whose
handler says nothing needs ``admin`` (fail closed: a new route is never open by accident).
``/health`` is public; ``/metrics`` is public only when ``metrics_public`` is set. Tokens come
only from the ``Authorization`` header: no cookies, no query strings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from llamahomed.http.keys import AUTHORITY, CLAIMS, CONFIG, METRICS
from llamahomed.core.errors import AuthenticationFailed, PermissionDenied

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
F = TypeVar("F", bound=Callable[..., Any])

ALWAYS_PUBLIC = frozenset({"/health"})
METRICS_PATH = "/metrics"
DEFAULT_SCOPE = "admin"
_SCOPE_ATTR = "__llamahome_scope__"
_SELF_AUTH_ATTR = "__llamahome_self_authenticating__"


def requires_scope(scope: str) -> Callable[[F], F]:
    """Mark a handler as needing ``scope`` (without it a route needs ``admin``)."""

    def mark(handler: F) -> F:
        setattr(handler, _SCOPE_ATTR, scope)
        return handler

    return mark


def self_authenticating(handler: F) -> F:
    """Mark a handler that checks credentials itself, before it does anything else (the
    WebSocket upgrade: a bearer header, or a single-use ticket, since browsers cannot set
    headers on a WebSocket). It must set ``request[CLAIMS]`` and check its scope."""
    setattr(handler, _SELF_AUTH_ATTR, True)
    return handler


def public_paths(request: web.Request) -> frozenset[str]:
    """The paths this app serves without a token, from the live settings."""
    if request.app[CONFIG].settings.metrics_public:
        return ALWAYS_PUBLIC | {METRICS_PATH}
    return ALWAYS_PUBLIC


def route_scope(request: web.Request) -> str | None:
    """The scope the matched route needs; None for no route (it will answer 404/405)."""
    match = request.match_info
    if match.http_exception is not None:
        return None
    scope = getattr(match.handler, _SCOPE_ATTR, DEFAULT_SCOPE)
    return scope if isinstance(scope, str) else DEFAULT_SCOPE


def require_scope(request: web.Request, scope: str) -> None:
    """403 unless the request's token carries ``scope`` (for checks inside a handler)."""
    claims = request.get(CLAIMS)
    if claims is None or not claims.has_scope(scope):
        raise insufficient_scope(scope)


def insufficient_scope(scope: str) -> PermissionDenied:
    return PermissionDenied(
        f"this route needs a token with the {scope!r} scope", details={"required_scope": scope},
        headers={"WWW-Authenticate": f'Bearer realm="llamahome", error="insufficient_scope", '
                                     f'scope="{scope}"'})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 without a valid token, 403 without the route's scope; the claims go on the request."""
    if request.path in public_paths(request) or \
            getattr(request.match_info.handler, _SELF_AUTH_ATTR, False):
        return await handler(request)
    try:
        claims = request.app[AUTHORITY].check(request.headers.get("Authorization"))
    except AuthenticationFailed:
        request.app[METRICS].auth_failed()
        raise
    request[CLAIMS] = claims
    scope = route_scope(request)
    if scope is not None and not claims.has_scope(scope):
        raise insufficient_scope(scope)
    return await handler(request)
