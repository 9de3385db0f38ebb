"""From an HTTP error response (or an error line inside a stream or batch) to the typed error.

The envelope's ``code`` picks the class; an unknown code or a body that is no envelope at all
(a proxy's HTML page, aiohttp's plain-text 404) falls back by HTTP status.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any

from ._errors import APIError, _as_seconds, _error_class, _RetryAfterError

__all__ = ["error_from_response"]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


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
