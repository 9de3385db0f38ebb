"""LlamaHome: the Python client for the local ``llamahomed`` daemon.

``import llamahome`` is cheap: :class:`APIClient` (and with it aiohttp) is
imported on first access. Nothing here needs llama-cpp-python or the daemon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .error import APIError

if TYPE_CHECKING:
    from .client import APIClient

__all__ = ["APIClient", "APIError", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "APIClient":
        from .client import APIClient

        return APIClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
