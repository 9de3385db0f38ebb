"""LlamaHome: the Python client for the local ``llamahomed`` daemon.

``import llamahome`` is cheap: the clients (and with them aiohttp) are
imported on first access. Nothing here needs llama-cpp-python or the daemon;
:mod:`llamahome.server` (the engine in-process) needs the ``llamahomed`` package
(the ``server`` extra) when a ``LlamaServer`` is created, and :mod:`llamahome.monitoring`
needs prometheus-client and psutil (the ``toolkit`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .error import APIError, CircuitBreaker, RetryHandler

if TYPE_CHECKING:
    from .client import APIClient, LlamaClient, PooledClient, SyncClient

__all__ = [
    "APIClient",
    "APIError",
    "CircuitBreaker",
    "LlamaClient",
    "PooledClient",
    "RetryHandler",
    "SyncClient",
    "__version__",
]

_LAZY = frozenset({"APIClient", "LlamaClient", "PooledClient", "SyncClient"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
