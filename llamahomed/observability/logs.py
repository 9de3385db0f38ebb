"""structlog, configured once by the CLI: JSON lines off a terminal, readable text on one.

Everything goes through one pipeline on stderr: our structlog loggers, and the stdlib loggers of
aiohttp, asyncio and ``llamahome.monitoring`` through ``ProcessorFormatter`` (their ``extra``
fields kept). llama.cpp writes to the model worker's stderr; the daemon reads it and logs each
line as a ``worker_stderr`` event (debug, or warning when it reports an error). One summary line
per request comes from ``api/metrics.py``. Prompts, completions and tokens are never logged,
except prompts with the ``log_prompts`` debug setting.

:func:`redact` runs last before rendering, on every line (ours and the stdlib's, their
messages and formatted tracebacks alike): ``Bearer``/``Basic`` credentials, anything shaped like
a signed token, and ``bytes`` reprs (how aiohttp's parser quotes the raw request bytes it choked
on: a header line with a token, a chunk of a prompt) are replaced by ``[redacted]``. The
exception of an HTTP parser error is reduced to its type, its message never kept. The
connection layer (``http/connection.py``) already logs malformed requests without their bytes;
this is the net under every other path.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from aiohttp.http_exceptions import HttpProcessingError

REDACTED = "[redacted]"
_SECRETS = (
    # a bytes repr, as parsers quote raw input: b'...' / b"..." (escapes included)
    re.compile(r"""(?:bytearray\()?b(['"])(?:\\.|(?!\1)[^\\])*\1\)?"""),
    # credentials after an auth scheme, up to the next quote, space or escape
    re.compile(r"(?i)\b(?:bearer|basic)\s+[^\s'\"\\]+"),
    # an itsdangerous token: payload.timestamp.signature in base64url
    re.compile(r"\.?[A-Za-z0-9_-]{12,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{16,}"),
)


def scrub(text: str) -> str:
    """``text`` with every credential, token and raw-bytes repr replaced by ``[redacted]``."""
    for pattern in _SECRETS:
        text = pattern.sub(REDACTED, text)
    return text


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, (bytes, bytearray)):
        return REDACTED
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_value(v) for v in value]
    return value


def drop_parser_messages(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """An HTTP parser error's exception becomes its type name: its message quotes raw bytes."""
    info = event.get("exc_info")
    exc = info[1] if isinstance(info, tuple) else info if isinstance(info, BaseException) else None
    if isinstance(exc, HttpProcessingError):
        event.pop("exc_info")
        event["error"] = type(exc).__name__
    return event


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Every string of the line (message, fields, traceback) scrubbed (see :func:`scrub`)."""
    for key, value in event.items():
        event[key] = _scrub_value(value)
    return event


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Route structlog and the stdlib (aiohttp, asyncio) through one pipeline on stderr."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder(),
                           *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    drop_parser_messages, structlog.processors.format_exc_info, redact,
                    renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log duplicates our one summary line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
