"""Errors of the daemon, each carrying its HTTP status and stable envelope code.

Every error a client can see is rendered by one middleware (``http/middleware.py``) as the
API guide's envelope ``{"error": {"code", "message", "details"}}``.

A class declares only its ``code``; its ``status`` is looked up in the one table of codes,
:data:`llamahome.codes.CODES` (shared with the clients), when the class is defined, and a code
missing from the table fails at import. The tree (status from the table):

    LlamaHomeError                      internal_error            500
    ├── InvalidRequest                  invalid_request           400
    │   ├── ContextLengthExceeded       context_length_exceeded   400
    │   └── ValidationFailed            validation_error          422
    ├── AuthenticationFailed            authentication_error      401
    ├── PermissionDenied                permission_denied         403
    │   ├── HostNotAllowed              host_not_allowed          403
    │   └── OriginNotAllowed            origin_not_allowed        403
    ├── NotFound                        not_found                 404
    │   └── ModelNotFound               model_not_found           404
    ├── AlreadyExists                   already_exists            409
    ├── MethodNotAllowed                method_not_allowed        405
    ├── PayloadTooLarge                 payload_too_large         413
    ├── UnsupportedMediaType            unsupported_media_type    415
    ├── TooManyStreams                  too_many_streams          429
    ├── RateLimitExceeded               rate_limit_exceeded       429
    ├── HeadersTooLarge                 headers_too_large         431
    ├── ModelTooLarge                   model_too_large           507
    ├── ModelLoadFailed                 model_load_failed         500
    ├── WorkerCrashed                   worker_crashed            500
    ├── ServerBusy                      server_busy               503
    │   └── ModelReloading              model_reloading           503
    ├── ShuttingDown                    shutting_down             503
    ├── InsufficientStorage             insufficient_storage      507
    ├── QuantizeFailed                  quantize_failed           500
    └── DownloadFailed                  download_failed           502
        ├── DownloadNotFound            download_not_found        404
        ├── DownloadInterrupted         download_interrupted      502
        ├── DigestMismatch              digest_mismatch           502
        └── NotGGUF                     not_gguf                  502

    StartupError                        (not an HTTP error: the CLI turns it into exit code 1)
"""

from __future__ import annotations

from typing import Any

from llamahome.codes import CODES


class LlamaHomeError(Exception):
    """Root of every error the API can return.

    A subclass sets ``code`` (or inherits its parent's); ``status`` comes from
    :data:`llamahome.codes.CODES` and may not be set by hand.
    """

    code: str = "internal_error"
    status: int = CODES[code].status

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "status" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: the status comes from llamahome.codes, "
                            "declare only the code")
        row = CODES.get(cls.code)
        if row is None:
            raise TypeError(f"{cls.__name__}: code {cls.code!r} is not in llamahome.codes.CODES")
        cls.status = row.status

    def __init__(self, message: str, *, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.headers: dict[str, str] = headers or {}

    def envelope(self) -> dict[str, Any]:
        """The guide's error envelope for this error."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def openai_envelope(self) -> dict[str, Any]:
        """The same error as OpenAI's API shapes it (the ``/v1/`` routes answer with this)."""
        kind = _OPENAI_TYPES.get(self.status, "invalid_request_error" if self.status < 500
                                 else "server_error")
        fields = [e.get("field") for e in self.details.get("errors", []) if isinstance(e, dict)]
        return {"error": {"message": self.message, "type": kind,
                          "param": fields[0] if fields else None, "code": self.code}}


_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 429: "rate_limit_error", 503: "service_unavailable_error"}


class InvalidRequest(LlamaHomeError):
    code = "invalid_request"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class ValidationFailed(InvalidRequest):
    code = "validation_error"


class AuthenticationFailed(LlamaHomeError):
    """401 with ``WWW-Authenticate: Bearer`` (RFC 6750; ``error`` when a token was sent)."""

    code = "authentication_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None,
                 error: str | None = None) -> None:
        challenge = 'Bearer realm="llamahome"' + (f', error="{error}"' if error else "")
        super().__init__(message, details=details, headers={"WWW-Authenticate": challenge})


class PermissionDenied(LlamaHomeError):
    code = "permission_denied"


class HostNotAllowed(PermissionDenied):
    code = "host_not_allowed"


class OriginNotAllowed(PermissionDenied):
    code = "origin_not_allowed"


class NotFound(LlamaHomeError):
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(LlamaHomeError):
    code = "method_not_allowed"


class PayloadTooLarge(LlamaHomeError):
    code = "payload_too_large"


class UnsupportedMediaType(LlamaHomeError):
    code = "unsupported_media_type"


class TooManyStreams(LlamaHomeError):
    code = "too_many_streams"


class HeadersTooLarge(LlamaHomeError):
    code = "headers_too_large"


class ModelTooLarge(LlamaHomeError):
    """No variant of the model fits this machine's free memory (the planner says what would)."""

    code = "model_too_large"


class RateLimitExceeded(LlamaHomeError):
    code = "rate_limit_exceeded"


class ModelLoadFailed(LlamaHomeError):
    code = "model_load_failed"


class WorkerCrashed(LlamaHomeError):
    code = "worker_crashed"


class ServerBusy(LlamaHomeError):
    code = "server_busy"


class ShuttingDown(LlamaHomeError):
    code = "shutting_down"


class ModelReloading(ServerBusy):
    """The model was reloaded with new settings before this request finished; retry it."""

    code = "model_reloading"


class AlreadyExists(LlamaHomeError):
    """A file the request would create is already there (or being made by another pull)."""

    code = "already_exists"


class InsufficientStorage(LlamaHomeError):
    """Not enough free disk space for a download or a quantized variant."""

    code = "insufficient_storage"


class QuantizeFailed(LlamaHomeError):
    code = "quantize_failed"


class DownloadFailed(LlamaHomeError):
    """A model download failed (network, HTTP status, bad content)."""

    code = "download_failed"


class DownloadNotFound(DownloadFailed):
    code = "download_not_found"


class DownloadInterrupted(DownloadFailed):
    """The transfer broke off; the partial file is kept and the next pull resumes it."""

    code = "download_interrupted"


class DigestMismatch(DownloadFailed):
    code = "digest_mismatch"


class NotGGUF(DownloadFailed):
    code = "not_gguf"


ERROR_CLASSES: tuple[type[LlamaHomeError], ...] = (
    LlamaHomeError, InvalidRequest, ContextLengthExceeded, ValidationFailed, AuthenticationFailed,
    PermissionDenied, HostNotAllowed, OriginNotAllowed, NotFound, ModelNotFound, MethodNotAllowed,
    PayloadTooLarge, UnsupportedMediaType, TooManyStreams, HeadersTooLarge, ModelLoadFailed,
    WorkerCrashed, ServerBusy, ModelReloading, ShuttingDown, ModelTooLarge, RateLimitExceeded,
    AlreadyExists, InsufficientStorage, QuantizeFailed, DownloadFailed, DownloadNotFound,
    DownloadInterrupted, DigestMismatch, NotGGUF,
)


def error_for_code(code: str, message: str, details: dict[str, Any] | None = None) -> LlamaHomeError:
    """Rebuild an error from its envelope code (used for errors that cross the worker pipe)."""
    for cls in ERROR_CLASSES:
        if cls.code == code:
            return cls(message, details=details) if cls is not AuthenticationFailed else cls(message)
    return LlamaHomeError(message, details=details)


class StartupError(Exception):
    """The daemon cannot start (port taken, unreadable config, ...). One clear line, no traceback."""
