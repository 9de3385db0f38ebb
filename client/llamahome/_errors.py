"""The client's error classes (public through :mod:`llamahome.error`, which draws the tree).

Kept apart from :mod:`llamahome.error` so that :mod:`llamahome._retry` and the envelope
parser can import them without a cycle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar


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


class ValidationError(InvalidRequestError):
    """A field failed validation (422); ``details["errors"]`` names each field."""

    default_code = "validation_error"


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


class HostNotAllowedError(PermissionDeniedError):
    """The daemon refused the ``Host`` header (not loopback, not in ``allowed_hosts``)."""

    default_code = "host_not_allowed"


class OriginNotAllowedError(PermissionDeniedError):
    """The daemon refused the browser ``Origin`` (not in ``allowed_origins``)."""

    default_code = "origin_not_allowed"


class NotFoundError(APIError):
    """The addressed resource does not exist (404)."""

    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    """The requested model is not known to the daemon."""

    default_code = "model_not_found"


class MethodNotAllowedError(APIError):
    """The route exists but not for this HTTP method (405)."""

    default_code = "method_not_allowed"


class AlreadyExistsError(APIError):
    """The file a request would create exists, or another pull is making it (409)."""

    default_code = "already_exists"


class UnsupportedMediaTypeError(APIError):
    """The body was not sent as ``application/json`` (415)."""

    default_code = "unsupported_media_type"


class PayloadTooLargeError(APIError):
    """The request body is larger than the daemon accepts (413)."""

    default_code = "payload_too_large"


class HeadersTooLargeError(APIError):
    """The request headers are larger than the daemon accepts (431)."""

    default_code = "headers_too_large"


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


class TooManyStreamsError(RateLimitError):
    """This token's user has as many streams open as allowed (429); one ending frees a slot."""

    default_code = "too_many_streams"


class ServerBusyError(_RetryAfterError):
    """The daemon's queue is full (503); see ``retry_after``."""

    default_code = "server_busy"


class ShuttingDownError(ServerBusyError):
    """The daemon is stopping and takes no new work (503)."""

    default_code = "shutting_down"


class ModelReloadingError(ServerBusyError):
    """The model was reloaded with new settings while the request ran (503); retry it."""

    default_code = "model_reloading"


class ModelLoadError(APIError):
    """The daemon could not load the model (bad file, not enough memory, ...)."""

    default_code = "model_load_failed"


class WorkerCrashedError(APIError):
    """The worker process serving the model died during the request."""

    default_code = "worker_crashed"


class QuantizeError(APIError):
    """llama.cpp could not quantize the model (500)."""

    default_code = "quantize_failed"


class ModelTooLargeError(APIError):
    """No variant of the model fits this machine's free memory (507).

    ``details`` says what would fit (and ``proposed_quantization``, when one would).
    """

    default_code = "model_too_large"


class InsufficientStorageError(APIError):
    """Not enough free disk space for a download or a quantized variant (507)."""

    default_code = "insufficient_storage"


class DownloadError(APIError):
    """A model download failed: unreachable host, an HTTP error, a size mismatch (502)."""

    default_code = "download_failed"


class DownloadNotFoundError(DownloadError):
    """The download server answered 404 or 410 (404)."""

    default_code = "download_not_found"


class DownloadInterruptedError(DownloadError):
    """The transfer broke off; the partial file is kept and the next pull resumes it (502)."""

    default_code = "download_interrupted"


class DigestMismatchError(DownloadError):
    """The downloaded file's sha256 is not the expected one; nothing was installed (502)."""

    default_code = "digest_mismatch"


class NotGGUFError(DownloadError):
    """The downloaded content is not a GGUF file (502)."""

    default_code = "not_gguf"


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


_WIRE_CLASSES: tuple[type[APIError], ...] = (
    InvalidRequestError, ContextLengthExceededError, ValidationError,
    AuthenticationError, PermissionDeniedError, HostNotAllowedError, OriginNotAllowedError,
    NotFoundError, ModelNotFoundError, MethodNotAllowedError, AlreadyExistsError,
    PayloadTooLargeError, UnsupportedMediaTypeError, RateLimitError, TooManyStreamsError,
    HeadersTooLargeError, InternalServerError, ModelLoadError, WorkerCrashedError, QuantizeError,
    DownloadError, DownloadInterruptedError, DigestMismatchError, NotGGUFError,
    DownloadNotFoundError, ServerBusyError, ShuttingDownError, ModelReloadingError,
    ModelTooLargeError,
    InsufficientStorageError,
)
"""One class per code of :data:`llamahome.codes.CODES` (a test holds the two together)."""

_BY_CODE: dict[str, type[APIError]] = {cls.default_code: cls for cls in _WIRE_CLASSES}
_BY_CODE["circuit_open"] = CircuitOpenError

# For a code this client does not know: the class by HTTP status.
_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    409: AlreadyExistsError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: ValidationError,
    429: RateLimitError,
    431: HeadersTooLargeError,
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


def _as_seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None

