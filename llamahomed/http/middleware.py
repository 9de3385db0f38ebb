"""Middlewares: request id -> (metrics and summary log line, http/observe.py) -> error envelope
(-> guard, http/guard.py -> auth, http/access.py -> rate limit, http/ratelimit.py)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from llamahomed.core.errors import (
    LlamaHomeError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from llamahomed.http.access import auth_middleware, matched_route
from llamahomed.http.keys import REQUEST_ID, ROUTES
from llamahomed.http.redact import for_client
from llamahomed.http.render.anthropic import anthropic_error_response

log = structlog.get_logger(__name__)

__all__ = ["ERROR_RENDERERS", "add_request_id_header", "auth_middleware", "error_dialect",
           "error_middleware", "render", "request_id_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

SERVER = "llamahomed"


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Accept a sane ``x-request-id`` or make one and bind it to every log line of the request
    (the summary line per request comes from ``api/metrics.py``'s middleware)."""
    given = request.headers.get("x-request-id", "")
    request_id = given if _REQUEST_ID_RE.match(given) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        return await handler(request)


def _from_http_exception(exc: web.HTTPException) -> LlamaHomeError:
    if exc.status == 404:
        return NotFound("no such endpoint; see the API guide for the routes")
    if exc.status == 405:
        allowed = sorted(getattr(exc, "allowed_methods", ()) or ())
        return MethodNotAllowed(f"method not allowed; this route accepts {', '.join(allowed)}",
                                details={"allowed": allowed})
    if exc.status == 413:
        return PayloadTooLarge(f"the request body is too large: {exc.text or ''}".strip())
    if exc.status == 415:
        return UnsupportedMediaType(exc.text or "unsupported media type")
    err = LlamaHomeError(exc.reason or "error")
    err.status, err.code = exc.status, "invalid_request" if exc.status < 500 else "internal_error"
    return err


ErrorRenderer = Callable[[LlamaHomeError, dict[str, str]], web.Response]
"""Renders one error in a dialect's shape, with these headers (``x-request-id`` among them)."""


def _native(error: LlamaHomeError, headers: dict[str, str]) -> web.Response:
    return web.json_response(error.envelope(), status=error.status, headers=headers)


def _openai(error: LlamaHomeError, headers: dict[str, str]) -> web.Response:
    # OpenAI (and every peer serving its API) answers an invalid body with 400, not 422.
    status = 400 if error.status == 422 else error.status
    return web.json_response(error.openai_envelope(), status=status, headers=headers)


def _ollama(error: LlamaHomeError, headers: dict[str, str]) -> web.Response:
    # Ollama answers ``{"error": "message"}``, and 400 for a body it cannot use.
    status = 400 if error.status == 422 else error.status
    return web.json_response({"error": error.message}, status=status, headers=headers)


ERROR_RENDERERS: dict[str, ErrorRenderer] = {
    "native": _native,
    "openai": _openai,
    "ollama": _ollama,
    "anthropic": anthropic_error_response,
}
"""Each error dialect a route may name (``Route.errors``) and its renderer."""

OPENAI_PREFIX = "/v1/"


def error_dialect(request: web.Request) -> str:
    """The dialect of the route ``request`` is for: the matched route's ``errors``, else that of
    a route with this exact path (a 405), else OpenAI's under ``/v1/`` (an unknown /v1 path)."""
    route = matched_route(request)
    if route is None:
        route = next((r for r in request.app[ROUTES] if r.path == request.path), None)
    if route is not None:
        return route.errors
    return "openai" if request.path.startswith(OPENAI_PREFIX) else "native"


def render(error: LlamaHomeError, request_id: str | None, dialect: str = "native") -> web.Response:
    """``error`` in ``dialect``'s shape, with the error's status and headers."""
    headers = dict(error.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return ERROR_RENDERERS[dialect](error, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as ``{"error": {"code", "message", "details"}}``, as the request's
    token may see it (``http/redact.py``: no filesystem paths without the admin scope).

    A route may name another dialect (``Route.errors``): the OpenAI-compatible routes answer
    OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``, the Anthropic ones
    ``{"type": "error", "error": {"type", "message"}}``, so each dialect's SDKs read them.
    """
    dialect = error_dialect(request)
    try:
        return await handler(request)
    except LlamaHomeError as exc:
        return render(for_client(exc, request), request.get(REQUEST_ID), dialect)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return render(_from_http_exception(exc), request.get(REQUEST_ID), dialect)
    except Exception:  # noqa: BLE001 - the boundary where anything unexpected becomes a 500
        log.exception("unhandled_error", path=request.path)
        return render(LlamaHomeError("internal error; the daemon log has the details"),
                      request.get(REQUEST_ID), dialect)


async def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs before any response's headers go out, streams included."""
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["x-request-id"] = request_id
    response.headers["Server"] = SERVER  # not aiohttp's default, which names Python's version
