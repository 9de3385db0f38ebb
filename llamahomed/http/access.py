"""Default deny: every route needs a valid bearer token and its scope, unless it is public.

The scope of each route is its entry in the route table (``http/routes.py``); a route the
table does not know needs ``admin`` (fail closed). ``/health`` is public; ``/metrics`` is
public only when ``metrics_public`` is set. Tokens come only from headers: ``Authorization:
Bearer <token>``, or ``x-api-key: <token>`` (what Anthropic's SDKs send); no cookies, no query
strings.
"""

from __future__ import annotations

from aiohttp import web

from llamahomed.core.errors import AuthenticationFailed, PermissionDenied
from llamahomed.http.keys import AUTHORITY, CLAIMS, CONFIG, METRICS, ROUTES
from llamahomed.http.route import DEFAULT_SCOPE, Handler, Route


def matched_route(request: web.Request) -> Route | None:
    """The table's entry for the route ``request`` matched (None: unmatched, or not in it)."""
    match = request.match_info
    if match.http_exception is not None:
        return None
    resource = match.route.resource
    if resource is None:
        return None
    return request.app[ROUTES].find(request.method, resource.canonical)


API_KEY_HEADER = "x-api-key"


def credentials(request: web.Request) -> str | None:
    """The token the request presents, as an ``Authorization`` value: that header, else an
    ``x-api-key`` header as a bearer token (None: neither was sent)."""
    header = request.headers.get("Authorization")
    if header:
        return header
    key = request.headers.get(API_KEY_HEADER, "").strip()
    return f"Bearer {key}" if key else None


def route_scope(request: web.Request) -> str | None:
    """The scope the matched route needs; None for no route (it will answer 404/405)."""
    if request.match_info.http_exception is not None:
        return None
    route = matched_route(request)
    return route.scope if route is not None else DEFAULT_SCOPE


def is_admin(request: web.Request) -> bool:
    """Whether the request's token has the ``admin`` scope (it may reload a loaded model)."""
    claims = request.get(CLAIMS)
    return claims is not None and claims.has_scope("admin")


def owner(request: web.Request) -> str:
    """Who the request is for (the token's user): slots and queue places are shared by it."""
    claims = request.get(CLAIMS)
    return claims.user_id if claims is not None else ""


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
    route = matched_route(request)
    if route is not None and (route.self_authenticating
                              or route.is_public(request.app[CONFIG].settings)):
        return await handler(request)
    try:
        claims = request.app[AUTHORITY].check(credentials(request))
    except AuthenticationFailed:
        request.app[METRICS].auth_failed()
        raise
    request[CLAIMS] = claims
    scope = route_scope(request)
    if scope is not None and not claims.has_scope(scope):
        raise insufficient_scope(scope)
    return await handler(request)
