"""The error codes of the LlamaHome API: the one table of (code, HTTP status, retryable, meaning).

Every error the daemon answers carries one of these codes in its envelope
``{"error": {"code", "message", "details"}}``. This table is the only place the facts live:

- the daemon's error classes (``llamahomed.core.errors``) take their HTTP status from it;
- the Python client (:mod:`llamahome.error`) has one class per code, and its
  :class:`~llamahome.error.RetryHandler` repeats a call only when the table marks the code
  ``retryable``;
- the JavaScript client's classes (``client/js/src/errors.js``) and the README's table of
  codes are checked against it by tests.

It lives in the client package because the client must stand alone (it never imports the
daemon), and it is public because it is a contract between two distributions: the daemon
depends on it, and so may any program that wants to know whether a code is worth repeating.

``retryable`` means the same call may succeed later without anything changed by the caller:
a full queue, a restarting worker, a quota that refills. A code that fails the same way every
time (a bad request, a model too large for this machine, a corrupt download) is not.

Codes that only the client raises (``connection_error``, ``timeout``, ``circuit_open``) are not
here: they never cross the wire. A code not in this table (a newer daemon, a proxy) is judged by
its HTTP status through :data:`RETRYABLE_STATUSES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = ["CODES", "RETRYABLE_STATUSES", "ErrorCode", "is_retryable"]


@dataclass(frozen=True)
class ErrorCode:
    """One row of the table."""

    code: str
    """The stable string in the envelope's ``code``."""
    status: int
    """The HTTP status the daemon answers it with."""
    retryable: bool
    """Whether repeating the same request may succeed."""
    meaning: str
    """What it says, in one line."""


_ROWS: Final = (
    ErrorCode("invalid_request", 400, False, "the request is malformed (bad JSON, bad name, ...)"),
    ErrorCode("context_length_exceeded", 400, False,
              "the prompt plus max_tokens does not fit the model's context"),
    ErrorCode("validation_error", 422, False,
              "a field failed validation (details.errors[].field names it)"),
    ErrorCode("authentication_error", 401, False,
              "no token, a bad, expired or revoked one (with WWW-Authenticate: Bearer)"),
    ErrorCode("permission_denied", 403, False, "the token lacks the route's scope"),
    ErrorCode("host_not_allowed", 403, False,
              "the Host header is neither loopback nor in allowed_hosts"),
    ErrorCode("origin_not_allowed", 403, False, "a browser Origin not in allowed_origins"),
    ErrorCode("not_found", 404, False, "no such route or resource"),
    ErrorCode("model_not_found", 404, False, "the model is not installed or not in the catalog"),
    ErrorCode("method_not_allowed", 405, False, "the route exists, not for this HTTP method"),
    ErrorCode("already_exists", 409, False,
              "the file a request would create is there, or another pull is making it"),
    ErrorCode("payload_too_large", 413, False, "the body is over max_body_bytes"),
    ErrorCode("unsupported_media_type", 415, False, "the body is not application/json"),
    ErrorCode("rate_limit_exceeded", 429, True,
              "this token is over its request quota; wait Retry-After"),
    ErrorCode("too_many_streams", 429, True,
              "this token's user has max_streams_per_token streams open; one ending frees a slot"),
    ErrorCode("headers_too_large", 431, False, "the request headers are over max_header_bytes"),
    ErrorCode("internal_error", 500, True, "an unexpected failure in the daemon"),
    ErrorCode("model_load_failed", 500, False,
              "the model file cannot be loaded (corrupt, unsupported, out of memory)"),
    ErrorCode("worker_crashed", 500, True,
              "the model's worker process died; the next request starts a fresh one"),
    ErrorCode("quantize_failed", 500, False, "llama.cpp could not quantize the model"),
    ErrorCode("download_failed", 502, True,
              "a model download failed (unreachable host, an HTTP error, a size mismatch)"),
    ErrorCode("download_interrupted", 502, True,
              "the transfer broke off; the partial file is kept and the next pull resumes"),
    ErrorCode("digest_mismatch", 502, False,
              "the downloaded file's sha256 differs from the expected one"),
    ErrorCode("not_gguf", 502, False, "the downloaded content is not a GGUF file"),
    ErrorCode("download_not_found", 404, False, "the download server answered 404 or 410"),
    ErrorCode("server_busy", 503, True, "the model's queue is full; wait Retry-After"),
    ErrorCode("shutting_down", 503, True,
              "the daemon is stopping and takes no new work; a restarted one will"),
    ErrorCode("model_reloading", 503, True,
              "the model was reloaded with new settings before the request finished"),
    ErrorCode("model_too_large", 507, False,
              "no variant of the model fits this machine's free memory (details say what would)"),
    ErrorCode("insufficient_storage", 507, False, "not enough free disk space"),
)

CODES: Final[Mapping[str, ErrorCode]] = MappingProxyType({row.code: row for row in _ROWS})
"""Every code the daemon can answer, by code."""

RETRYABLE_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
"""For a code not in :data:`CODES`: the HTTP statuses worth repeating (507, 501, 4xx are not)."""


def is_retryable(code: str | None, status: int | None) -> bool:
    """Whether an error with this envelope ``code`` and HTTP ``status`` may succeed if repeated.

    A known code answers by the table; an unknown one (or none) by the status.
    """
    row = CODES.get(code) if code is not None else None
    if row is not None:
        return row.retryable
    return status in RETRYABLE_STATUSES
