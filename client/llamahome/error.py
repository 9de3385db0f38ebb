"""Errors raised by the LlamaHome client and token code.

Every exception this package raises on purpose derives from one root::

    LlamaHomeError
     └── APIError                         .message .code .status .details .request_id
          ├── InvalidRequestError          invalid_request, validation_error   (400, 422)
          │    └── ContextLengthExceededError   context_length_exceeded
          ├── AuthenticationError          authentication_error                (401)
          │    ├── InvalidTokenError        bad signature or malformed token
          │    └── ExpiredTokenError        token past its ``exp``
          ├── PermissionDeniedError        permission_denied                   (403)
          ├── NotFoundError                not_found                           (404)
          │    └── ModelNotFoundError       model_not_found
          ├── MethodNotAllowedError        method_not_allowed                  (405)
          ├── PayloadTooLargeError         payload_too_large                   (413)
          ├── UnsupportedMediaTypeError    unsupported_media_type              (415)
          ├── RateLimitError               rate_limit_exceeded  .retry_after   (429)
          ├── ServerBusyError              server_busy          .retry_after   (503)
          │    └── ShuttingDownError        shutting_down                       (503)
          ├── ModelLoadError               model_load_failed
          ├── WorkerCrashedError           worker_crashed
          ├── InternalServerError          internal_error and any other 5xx
          ├── APIConnectionError           connection_error (no HTTP status)
          │    └── APITimeoutError          timeout
          └── CircuitOpenError             circuit_open   .retry_after (raised by the client)

Recovery helpers live here too (see :mod:`llamahome._retry`): :class:`RetryHandler`
retries what is safe to repeat, :class:`CircuitBreaker` stops calling a failing daemon.

The class is chosen by the stable string ``code`` of the daemon's error envelope
``{"error": {"code", "message", "details"}}``; a code this client does not know
falls back to a class chosen by the HTTP status (the number in parentheses).
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "CircuitBreaker",
    "CircuitOpenError",
    "ContextLengthExceededError",
    "ExpiredTokenError",
    "InternalServerError",
    "InvalidRequestError",
    "InvalidTokenError",
    "LlamaHomeError",
    "MethodNotAllowedError",
    "ModelLoadError",
    "ModelNotFoundError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryHandler",
    "ServerBusyError",
    "ShuttingDownError",
    "UnsupportedMediaTypeError",
    "WorkerCrashedError",
    "error_from_response",
]


class LlamaHomeError(Exception):
    """Root of every error raised on purpose by the ``llamahome`` package."""


class APIError(LlamaHomeError):
    """An error reported by the daemon, or met while talking to it.

    ``code`` is the stable *string* code of the daemon's error envelope
    (``"rate_limit_exceeded"``, ``"model_not_found"``, ...), not an HTTP status
    number as the API guide's sketch ``APIError(message, code: int)`` has it;
    the HTTP status, when there was one, is in ``status``. When ``code`` is
    left out the class's ``default_code`` is used. ``details`` is the
    envelope's ``details`` object (an empty dict when there was none) and
    ``request_id`` the daemon's ``X-Request-Id`` for the failed request.
    """

    default_code: ClassVar[str] = "api_error"

    def __init__(
        self,
        message: str,
        code: str | None = None,
        *,
        status: int | None = None,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: str = code if code is not None else self.default_code
        self.status = status
        self.details: dict[str, Any] = dict(details) if details else {}
        self.request_id = request_id

    def __str__(self) -> str:
        where = f"{self.code}, HTTP {self.status}" if self.status is not None else self.code
        return f"{self.message} ({where})"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, code={self.code!r}, "
            f"status={self.status!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments are lost by Exception's default pickling.
        return (_rebuild, (type(self), self.message, self.code, self._state()))

    def _state(self) -> dict[str, Any]:
        return {"status": self.status, "details": self.details, "request_id": self.request_id}


def _rebuild(cls: type[APIError], message: str, code: str, state: dict[str, Any]) -> APIError:
    return cls(message, code, **state)


class InvalidRequestError(APIError):
    """The request was malformed or failed validation (400, 422)."""

    default_code = "invalid_request"


class ContextLengthExceededError(InvalidRequestError):
    """The prompt plus ``max_tokens`` does not fit the model's context."""

    default_code = "context_length_exceeded"


class AuthenticationError(APIError):
    """Missing, malformed, expired or unknown credentials (401)."""

    default_code = "authentication_error"


class InvalidTokenError(AuthenticationError):
    """A token's signature or payload is not valid."""


class ExpiredTokenError(AuthenticationError):
    """A token was validly signed but its ``exp`` has passed."""


class PermissionDeniedError(APIError):
    """The credentials are valid but lack the needed scope (403)."""

    default_code = "permission_denied"


class NotFoundError(APIError):
    """The addressed resource does not exist (404)."""

    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    """The requested model is not known to the daemon."""

    default_code = "model_not_found"


class MethodNotAllowedError(APIError):
    """The route exists but not for this HTTP method (405)."""

    default_code = "method_not_allowed"


class UnsupportedMediaTypeError(APIError):
    """The body was not sent as ``application/json`` (415)."""

    default_code = "unsupported_media_type"


class PayloadTooLargeError(APIError):
    """The request body is larger than the daemon accepts (413)."""

    default_code = "payload_too_large"


class _RetryAfterError(APIError):
    """An error that may carry a server-chosen wait before retrying."""

    def __init__(
        self,
        message: str,
        code: str | None = None,
        *,
        status: int | None = None,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code, status=status, details=details, request_id=request_id)
        if retry_after is None:
            retry_after = _as_seconds(self.details.get("retry_after"))
        self.retry_after: float | None = retry_after
        """Seconds to wait before retrying, when the daemon said."""

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "retry_after": self.retry_after}


class RateLimitError(_RetryAfterError):
    """This client is over its request quota (429); see ``retry_after``."""

    default_code = "rate_limit_exceeded"


class ServerBusyError(_RetryAfterError):
    """The daemon's queue is full (503); see ``retry_after``."""

    default_code = "server_busy"


class ShuttingDownError(ServerBusyError):
    """The daemon is stopping and takes no new work (503)."""

    default_code = "shutting_down"


class ModelLoadError(APIError):
    """The daemon could not load the model (bad file, not enough memory, ...)."""

    default_code = "model_load_failed"


class WorkerCrashedError(APIError):
    """The worker process serving the model died during the request."""

    default_code = "worker_crashed"


class InternalServerError(APIError):
    """Any other server-side failure (5xx)."""

    default_code = "internal_error"


class APIConnectionError(APIError):
    """The daemon could not be reached, or the connection broke (no status)."""

    default_code = "connection_error"


class APITimeoutError(APIConnectionError):
    """The request did not complete within the client's timeout."""

    default_code = "timeout"


class CircuitOpenError(_RetryAfterError):
    """The client's :class:`CircuitBreaker` is open: the call was not sent.

    ``retry_after`` is how long until the breaker lets a trial call through.
    """

    default_code = "circuit_open"


_BY_CODE: dict[str, type[APIError]] = {
    "invalid_request": InvalidRequestError,
    "validation_error": InvalidRequestError,
    "context_length_exceeded": ContextLengthExceededError,
    "authentication_error": AuthenticationError,
    "permission_denied": PermissionDeniedError,
    "not_found": NotFoundError,
    "model_not_found": ModelNotFoundError,
    "payload_too_large": PayloadTooLargeError,
    "method_not_allowed": MethodNotAllowedError,
    "unsupported_media_type": UnsupportedMediaTypeError,
    "shutting_down": ShuttingDownError,
    "circuit_open": CircuitOpenError,
    "rate_limit_exceeded": RateLimitError,
    "server_busy": ServerBusyError,
    "model_load_failed": ModelLoadError,
    "worker_crashed": WorkerCrashedError,
    "internal_error": InternalServerError,
}

_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: InvalidRequestError,
    429: RateLimitError,
    503: ServerBusyError,
}


def _error_class(code: str | None, status: int | None) -> type[APIError]:
    if code is not None and code in _BY_CODE:
        return _BY_CODE[code]
    if status is None:
        return APIError
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return InternalServerError if status >= 500 else APIError


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def _as_seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _retry_after_header(headers: Mapping[str, str]) -> float | None:
    millis = _as_seconds(_header(headers, "retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    seconds = _as_seconds(raw)
    if seconds is not None:
        return seconds
    try:  # An HTTP-date.
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _envelope(body: Any) -> tuple[str | None, str | None, Mapping[str, Any] | None]:
    """Extract ``(code, message, details)`` from a response body of any shape."""
    if isinstance(body, (bytes, bytearray)):
        text = bytes(body).decode("utf-8", errors="replace")
        try:
            body = json.loads(text)
        except ValueError:
            body = text
    if isinstance(body, str):
        text = body.strip()
        return None, (text[:500] or None), None
    if not isinstance(body, Mapping):
        return None, None, None
    error = body.get("error", body)
    if isinstance(error, str):
        return None, error, None
    if not isinstance(error, Mapping):
        return None, None, None
    code = error.get("code")
    if not isinstance(code, str):
        code = error.get("type") if isinstance(error.get("type"), str) else None
    message = error.get("message")
    details = error.get("details")
    return (
        code,
        message if isinstance(message, str) else None,
        details if isinstance(details, Mapping) else None,
    )


def _build_error(
    code: str | None,
    message: str | None,
    details: Mapping[str, Any] | None,
    *,
    status: int | None,
    headers: Mapping[str, str],
) -> APIError:
    cls = _error_class(code, status)
    if message is None:
        message = f"HTTP {status}" if status is not None else "request failed"
    request_id = _header(headers, "x-request-id")
    code = code if code is not None else cls.default_code
    if issubclass(cls, _RetryAfterError):
        retry_after = _as_seconds((details or {}).get("retry_after"))
        if retry_after is None:
            retry_after = _retry_after_header(headers)
        return cls(
            message,
            code,
            status=status,
            details=details,
            request_id=request_id,
            retry_after=retry_after,
        )
    return cls(message, code, status=status, details=details, request_id=request_id)


def error_from_response(status: int, body: Any, headers: Mapping[str, str]) -> APIError:
    """Map an HTTP error response to the matching :class:`APIError` subclass.

    ``body`` is the decoded JSON body, or raw bytes/text when it was not JSON
    (a proxy's HTML page, aiohttp's plain-text 404, ...). The envelope's
    ``code`` picks the class; unknown codes and non-envelope bodies fall back
    by ``status``. ``retry_after`` comes from ``details.retry_after``, then the
    ``retry-after-ms`` and ``Retry-After`` headers.
    """
    code, message, details = _envelope(body)
    return _build_error(code, message, details, status=status, headers=headers)


def _error_from_item(error: Any) -> APIError:
    """Map an error object met inside a 200 response (a stream or batch item)."""
    code, message, details = _envelope({"error": error})
    return _build_error(code, message, details, status=None, headers={})


# At the end: _retry imports the classes above (the package's __init__ loads this module first).
from ._retry import CircuitBreaker, RetryHandler  # noqa: E402
