"""The route table's types: one :class:`Route` per (method, path), with its scope and its
OpenAPI description. The router, the auth check and the OpenAPI document are all built from
the app's :class:`RouteTable` (``http/routes.py`` lists the daemon's routes).

Scopes: ``public`` (no token), ``inference``, ``admin``. A route the table does not know (one
added to ``app.router`` by hand) needs ``admin``: default deny, a new route is never open by
accident, and the OpenAPI document flags it as undocumented.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Scope = Literal["public", "inference", "admin"]
DEFAULT_SCOPE: Scope = "admin"
JSON = "application/json"


@dataclass(frozen=True)
class Operation:
    """How one route is described in the OpenAPI document."""

    summary: str
    tag: str = "api"
    request: type[BaseModel] | dict[str, Any] | None = None
    response: type[BaseModel] | dict[str, Any] | None = None
    response_type: str = JSON
    also_streams: bool = False
    """The route answers NDJSON (StreamLine) when the request asks for ``stream``."""
    errors: tuple[int, ...] = field(default=())
    description: str = ""


@dataclass(frozen=True)
class Route:
    """One (method, path): its handler, the scope a token needs, and its description."""

    method: str
    path: str
    handler: Handler
    scope: Scope
    operation: Operation
    public_when: str | None = None
    """A settings field that, when true, makes the route public (``metrics_public``)."""
    self_authenticating: bool = False
    """The handler checks credentials itself before anything else (the WebSocket upgrade:
    browsers cannot set headers on it, so a single-use ticket may stand in for the token)."""
    errors: str | None = None
    """The dialect its errors are rendered in (a key of ``middleware.ERROR_DIALECTS``:
    ``"ollama"``, ...); None: OpenAI's under ``/v1/``, else the guide's envelope."""

    def is_public(self, settings: Any) -> bool:
        return self.scope == "public" or bool(self.public_when and getattr(settings, self.public_when))


class RouteTable:
    """The app's routes by (method, path); HEAD is answered by the GET route."""

    def __init__(self, routes: tuple[Route, ...] = ()) -> None:
        self._routes: dict[tuple[str, str], Route] = {}
        for route in routes:
            self.add(route)

    def add(self, route: Route) -> None:
        key = (route.method, route.path)
        if key in self._routes:
            raise ValueError(f"route {route.method} {route.path} is declared twice")
        self._routes[key] = route

    def find(self, method: str, path: str) -> Route | None:
        route = self._routes.get((method, path))
        if route is None and method == "HEAD":
            route = self._routes.get(("GET", path))
        return route

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())

    def install(self, app: web.Application) -> None:
        """Register every route with ``app.router`` (GET routes answer HEAD too)."""
        for route in self:
            app.router.add_route(route.method, route.path, route.handler)

    def register(self, app: web.Application, route: Route) -> None:
        """Add one more route to the table and the router (a plugin, a test)."""
        self.add(route)
        app.router.add_route(route.method, route.path, route.handler)
