"""Default deny, proven over every route the app has (present and future ones)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from llamahome.auth import TokenGenerator

from llamahomed.http.app import create_app
from llamahomed.http.keys import ROUTES
from llamahomed.http.route import DEFAULT_SCOPE

ALWAYS_PUBLIC = frozenset({"/health"})
METRICS_PATH = "/metrics"
from tests.security.helpers import assert_envelope, bearer, issue


def concrete(path: str) -> str:
    """A request path for a route pattern: every ``{placeholder}`` filled in."""
    return re.sub(r"\{[^}]+\}", "x", path)


def routes(app: web.Application) -> list[tuple[str, str, str]]:
    """(method, path, the scope the route table gives it) of every route, HEAD included."""
    found = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        assert path, f"a route with no path: {route!r}"
        method = "GET" if route.method == "*" else route.method
        entry = app[ROUTES].find(method, route.resource.canonical) if route.resource else None
        found.append((method, concrete(path), entry.scope if entry else DEFAULT_SCOPE))
    return found


def error_dialects(app: web.Application) -> dict[tuple[str, str], str]:
    """(method, request path) -> the error dialect its table entry names, where it names one."""
    found = {}
    for route in app.router.routes():
        if route.resource is None:
            continue
        entry = app[ROUTES].find(route.method, route.resource.canonical)
        if entry is not None and entry.errors is not None:
            found[(route.method, concrete(route.resource.canonical))] = entry.errors
    return found


async def future_route(request: web.Request) -> web.Response:
    return web.json_response({"reached": True})


def full_app(settings: Any) -> web.Application:
    """The real app plus a route added later that says nothing about scopes (must need admin)."""
    app = create_app(settings)
    app.router.add_post("/api/v1/future", future_route)
    return app


def error_of(path: str, data: Any, code: str, dialect: str | None = None) -> dict[str, Any]:
    """Our envelope; on the OpenAI routes (``/v1/``) OpenAI's error shape with the same code;
    on a route whose table entry names another dialect (Ollama's), that dialect's shape."""
    if dialect == "anthropic":
        assert data["type"] == "error" and set(data["error"]) == {"type", "message"}, data
        return dict(data["error"])
    if dialect == "ollama":
        assert set(data) == {"error"} and isinstance(data["error"], str) and data["error"], data
        return {"message": data["error"]}
    if not path.startswith("/v1/"):
        return assert_envelope(data, code)
    error: dict[str, Any] = data["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    return error


async def test_every_non_public_route_refuses_no_token_a_bad_token_and_a_wrong_scope(
        aiohttp_client: Any, settings: Any) -> None:
    app = full_app(settings)
    client = await aiohttp_client(app)
    forged = TokenGenerator("wrong-secret").create_token("mallory", scopes=["admin", "inference"])
    checked = 0
    for method, path, scope in routes(app):
        if path in ALWAYS_PUBLIC or scope == "public":
            continue
        dialect = error_dialects(app).get((method, path))
        for headers in ({}, bearer(forged), bearer("garbage")):
            response = await client.request(method, path, headers=headers)
            assert response.status == 401, (method, path, headers)
            assert response.headers["WWW-Authenticate"].startswith("Bearer ")
            if method != "HEAD":
                error_of(path, await response.json(), "authentication_error", dialect)
        others = tuple(s for s in ("admin", "inference") if s != scope)
        response = await client.request(method, path, headers=bearer(issue(settings, scopes=others)))
        assert response.status == 403, (method, path)
        assert f'scope="{scope}"' in response.headers["WWW-Authenticate"]
        if method != "HEAD":
            error = error_of(path, await response.json(), "permission_denied", dialect)
            assert (path.startswith("/v1/") or dialect not in (None, "native")
                    or error["details"] == {"required_scope": scope})
        checked += 1
    assert checked >= 9  # the guide's routes (GET ones twice, with HEAD) and the future one


async def test_a_route_that_declares_no_scope_needs_admin(aiohttp_client: Any, settings: Any) -> None:
    client = await aiohttp_client(full_app(settings))
    inference = await client.post("/api/v1/future", headers=bearer(issue(settings)))
    assert inference.status == 403
    admin = await client.post("/api/v1/future",
                              headers=bearer(issue(settings, scopes=("admin", "inference"))))
    assert admin.status == 200 and (await admin.json())["reached"] is True


async def test_scopes_split_inference_from_admin(aiohttp_client: Any, settings: Any) -> None:
    app = create_app(settings)
    scopes = {(m, p): s for m, p, s in routes(app)}
    assert scopes[("POST", "/api/v1/process")] == "inference"
    assert scopes[("POST", "/api/v1/stream")] == "inference"
    assert scopes[("POST", "/api/v1/batch")] == "inference"
    assert scopes[("GET", "/api/v1/models")] == "inference"
    assert scopes[("GET", "/api/v1/config")] == "inference"
    assert scopes[("POST", "/api/v1/config")] == "admin"


async def test_health_is_public_and_unknown_paths_still_need_a_token(api: Any) -> None:
    assert (await api.get("/health")).status == 200
    assert (await api.get("/api/v1/nope")).status == 401
    assert (await api.get("/health/../api/v1/models")).status == 401


async def test_metrics_is_public_only_when_configured(aiohttp_client: Any, make_settings: Any) -> None:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="up 1\n")

    for public, status in ((False, 401), (True, 200)):
        app = create_app(make_settings(metrics_public=public))
        if not any(r.resource is not None and r.resource.canonical == METRICS_PATH
                   for r in app.router.routes()):
            app.router.add_get(METRICS_PATH, metrics)  # until the metrics route exists
        client = await aiohttp_client(app)
        response = await client.get(METRICS_PATH)
        assert response.status == status, public
        await client.close()

