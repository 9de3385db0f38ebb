"""Errors raised by the LlamaHome client and token code.

Every exception this package raises on purpose derives from one root::

    LlamaHomeError
     └── APIError                         .message .code .status .details .request_id
          ├── InvalidRequestError          invalid_request                      (400)
          │    ├── ContextLengthExceededError   context_length_exceeded         (400)
          │    └── ValidationError          validation_error                    (422)
          ├── AuthenticationError          authentication_error                 (401)
          │    ├── InvalidTokenError        bad signature or malformed token
          │    └── ExpiredTokenError        token past its ``exp``
          ├── PermissionDeniedError        permission_denied                    (403)
          │    ├── HostNotAllowedError      host_not_allowed                    (403)
          │    └── OriginNotAllowedError    origin_not_allowed                  (403)
          ├── NotFoundError                not_found                            (404)
          │    └── ModelNotFoundError       model_not_found                     (404)
          ├── MethodNotAllowedError        method_not_allowed                   (405)
          ├── AlreadyExistsError           already_exists                       (409)
          ├── PayloadTooLargeError         payload_too_large                    (413)
          ├── UnsupportedMediaTypeError    unsupported_media_type               (415)
          ├── RateLimitError               rate_limit_exceeded  .retry_after    (429)
          │    └── TooManyStreamsError      too_many_streams                    (429)
          ├── HeadersTooLargeError         headers_too_large                    (431)
          ├── ServerBusyError              server_busy          .retry_after    (503)
          │    ├── ShuttingDownError        shutting_down                       (503)
          │    └── ModelReloadingError      model_reloading                     (503)
          ├── ModelLoadError               model_load_failed                    (500)
          ├── WorkerCrashedError           worker_crashed                       (500)
          ├── QuantizeError                quantize_failed                      (500)
          ├── DownloadError                download_failed                      (502)
          │    ├── DownloadNotFoundError    download_not_found                  (404)
          │    ├── DownloadInterruptedError download_interrupted                (502)
          │    ├── DigestMismatchError      digest_mismatch                     (502)
          │    └── NotGGUFError             not_gguf                            (502)
          ├── ModelTooLargeError           model_too_large                      (507)
          ├── InsufficientStorageError     insufficient_storage                 (507)
          ├── InternalServerError          internal_error  also any other 5xx   (500)
          ├── APIConnectionError           connection_error (no HTTP status)
          │    └── APITimeoutError          timeout
          └── CircuitOpenError             circuit_open   .retry_after (raised by the client)

The codes, their statuses and whether each is worth repeating are one table,
:data:`llamahome.codes.CODES`; the daemon's errors are built from the same table.

Recovery helpers live here too (see :mod:`llamahome._retry`): :class:`RetryHandler`
retries what the table marks retryable, :class:`CircuitBreaker` stops calling a failing daemon.

The class is chosen by the stable string ``code`` of the daemon's error envelope
``{"error": {"code", "message", "details"}}``; a code this client does not know
falls back to a class chosen by the HTTP status.
"""

from __future__ import annotations

from ._envelope import error_from_response
from ._errors import (
    AlreadyExistsError,
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    CircuitOpenError,
    ContextLengthExceededError,
    DigestMismatchError,
    DownloadError,
    DownloadInterruptedError,
    DownloadNotFoundError,
    ExpiredTokenError,
    HeadersTooLargeError,
    HostNotAllowedError,
    InsufficientStorageError,
    InternalServerError,
    InvalidRequestError,
    InvalidTokenError,
    LlamaHomeError,
    MethodNotAllowedError,
    ModelLoadError,
    ModelNotFoundError,
    ModelTooLargeError,
    NotFoundError,
    NotGGUFError,
    OriginNotAllowedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QuantizeError,
    RateLimitError,
    ServerBusyError,
    ShuttingDownError,
    ModelReloadingError,
    TooManyStreamsError,
    UnsupportedMediaTypeError,
    ValidationError,
    WorkerCrashedError,
)
from ._retry import CircuitBreaker, RetryHandler

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AlreadyExistsError",
    "AuthenticationError",
    "CircuitBreaker",
    "CircuitOpenError",
    "ContextLengthExceededError",
    "DigestMismatchError",
    "DownloadError",
    "DownloadInterruptedError",
    "DownloadNotFoundError",
    "ExpiredTokenError",
    "HeadersTooLargeError",
    "HostNotAllowedError",
    "InsufficientStorageError",
    "InternalServerError",
    "InvalidRequestError",
    "InvalidTokenError",
    "LlamaHomeError",
    "MethodNotAllowedError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelTooLargeError",
    "NotFoundError",
    "NotGGUFError",
    "OriginNotAllowedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QuantizeError",
    "RateLimitError",
    "RetryHandler",
    "ServerBusyError",
    "ShuttingDownError",
    "ModelReloadingError",
    "TooManyStreamsError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "WorkerCrashedError",
    "error_from_response",
]
