"""What an error may tell a client: the daemon's filesystem is the admin's business.

For a request without an ``admin``-scoped token (no token at all included), errors whose text
comes from outside the daemon (a worker's stderr, llama.cpp, the quantizer) are replaced by a
sentence naming the model and pointing at the daemon log, which gets the original; every other
error loses its path-valued details, and the daemon's own directories and absolute paths are
cut out of its message and string details. Admin tokens get errors unchanged. Applied once,
where errors are rendered.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from llamahomed.core.errors import LlamaHomeError
from llamahomed.http.keys import CLAIMS, CONFIG

__all__ = ["for_client"]

log = structlog.get_logger(__name__)

# Codes whose message quotes foreign text (worker stderr, llama.cpp, the quantizer). A
# worker_crashed message is the daemon's own ("stopped (exit code -9) ...; retry it"): scrubbed only.
OPAQUE = {"model_load_failed": "failed to load", "quantize_failed": "could not be quantized"}
PATH_KEYS = frozenset({"path", "partial", "file_path", "models_dir", "directory", "target"})
HIDDEN = "<hidden>"
# An absolute path under a filesystem root (not a route such as /api/v1/..., not a URL's path).
_ABSOLUTE = re.compile(r"(?<![\w.:/-])/(?:tmp|home|root|var|usr|opt|etc|srv|mnt|media|run|data|"
                       r"Users|Volumes|private|nix|snap|proc|dev|lib|lib64|bin|sbin)/[^\s'\",;)]*")


def for_client(error: LlamaHomeError, request: web.Request) -> LlamaHomeError:
    """``error`` as ``request``'s token may see it (the same object for admins)."""
    claims = request.get(CLAIMS)
    if claims is not None and claims.has_scope("admin"):
        return error
    model = error.details.get("model")
    if error.code in OPAQUE:
        log.warning("error_detail_withheld", code=error.code, message=error.message,
                    details=error.details)
        what = f"model {model!r}" if isinstance(model, str) else "the model"
        message = f"{what} {OPAQUE[error.code]}; the daemon log has the details"
        return _copy(error, message, {"model": model} if isinstance(model, str) else {})
    roots = _roots(request)
    message = _scrub(error.message, roots)
    details = {key: _scrub_value(value, roots) for key, value in error.details.items()
               if key not in PATH_KEYS}
    if message == error.message and details == error.details:
        return error
    return _copy(error, message, details)


def _copy(error: LlamaHomeError, message: str, details: dict[str, Any]) -> LlamaHomeError:
    clean = LlamaHomeError(message, details=details, headers=error.headers)
    clean.code, clean.status = error.code, error.status
    return clean


def _roots(request: web.Request) -> list[str]:
    """The daemon's directories, longest first (a path inside one names it)."""
    found: set[str] = {sys.prefix, str(Path.home())}
    store = request.app.get(CONFIG)
    if store is not None:
        settings = store.settings
        for path in (settings.models_path, settings.data_dir, settings.state_dir,
                     settings.config_file.parent):
            found.update({str(path), str(path.resolve())})
    return sorted((r for r in found if len(r) > 1), key=len, reverse=True)


def _scrub(text: str, roots: Iterable[str]) -> str:
    for root in roots:
        text = text.replace(root, HIDDEN)
    return _ABSOLUTE.sub(HIDDEN, text)


def _scrub_value(value: Any, roots: list[str]) -> Any:
    if isinstance(value, str):
        return _scrub(value, roots)
    if isinstance(value, list):
        return [_scrub_value(v, roots) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_value(v, roots) for k, v in value.items() if k not in PATH_KEYS}
    return value
