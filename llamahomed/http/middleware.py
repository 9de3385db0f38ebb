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
from llamahomed.http.keys import REQUEST_ID
from llamahomed.http.redact import for_client

log = structlog.get_logger(__name__)

__all__ = ["ERROR_DIALECTS", "add_request_id_header", "auth_middleware", "error_middleware",
           "render", "request_id_middleware"]

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


OPENAI_PREFIX = "/v1/"

ErrorDialect = Callable[[LlamaHomeError], tuple[int, dict[str, object]]]
"""An error as one wire dialect says it: its status and its body."""


def _native(error: LlamaHomeError) -> tuple[int, dict[str, object]]:
    return error.status, error.envelope()


def _openai(error: LlamaHomeError) -> tuple[int, dict[str, object]]:
    # OpenAI (and every peer serving its API) answers an invalid body with 400, not 422.
    return (400 if error.status == 422 else error.status), error.openai_envelope()


def _ollama(error: LlamaHomeError) -> tuple[int, dict[str, object]]:
    # Ollama answers ``{"error": "message"}``, and 400 for a body it cannot use.
    return (400 if error.status == 422 else error.status), {"error": error.message}


ERROR_DIALECTS: dict[str, ErrorDialect] = {"native": _native, "openai": _openai,
                                           "ollama": _ollama}
"""How each dialect renders an error; a route names its dialect (``Route.errors``)."""


def error_dialect(request: web.Request) -> str:
    """The matched route's error dialect; by default OpenAI's under ``/v1/``, else native."""
    route = matched_route(request)
    if route is not None and route.errors is not None:
        return route.errors
    return "openai" if request.path.startswith(OPENAI_PREFIX) else "native"


def render(error: LlamaHomeError, request_id: str | None, *, openai: bool = False,
           dialect: str | None = None) -> web.Response:
    """The error in ``dialect`` (the guide's envelope by default, OpenAI's with ``openai``),
    with the error's status and headers."""
    headers = dict(error.headers)
    if request_id:
        headers["x-request-id"] = request_id
    status, body = ERROR_DIALECTS[dialect or ("openai" if openai else "native")](error)
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as ``{"error": {"code", "message", "details"}}``, as the request's
    token may see it (``http/redact.py``: no filesystem paths without the admin scope).

    A route may name another dialect (``Route.errors``): the OpenAI-compatible routes
    (``/v1/...``) get OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, so
    OpenAI's SDKs read them; Ollama's routes ``{"error": "message"}``.
    """
    dialect = error_dialect(request)
    try:
        return await handler(request)
    except LlamaHomeError as exc:
        return render(for_client(exc, request), request.get(REQUEST_ID), dialect=dialect)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return render(_from_http_exception(exc), request.get(REQUEST_ID), dialect=dialect)
    except Exception:  # noqa: BLE001 - the boundary where anything unexpected becomes a 500
        log.exception("unhandled_error", path=request.path)
        return render(LlamaHomeError("internal error; the daemon log has the details"),
                      request.get(REQUEST_ID), dialect=dialect)


async def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs before any response's headers go out, streams included."""
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["x-request-id"] = request_id
    response.headers["Server"] = SERVER  # not aiohttp's default, which names Python's version
