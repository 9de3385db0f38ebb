"""How a client finds the local daemon and its credentials.

Looked up in this order, first hit wins:

- endpoint: ``$LLAMAHOME_ENDPOINT``; else ``<state_dir>/daemon.json``
  (``{"host", "port", "pid"}``, written by a running ``llamahomed``; a wildcard
  host means loopback); else :data:`DEFAULT_ENDPOINT`.
- API key: ``$LLAMAHOME_API_KEY``; else the text of ``<state_dir>/admin.token``;
  else none.
- state directory: ``$LLAMAHOME_STATE_DIR``; else platformdirs' user state dir
  for ``llamahome``.

Each call reads the environment and files afresh; nothing is cached. The
runtime file's ``pid`` is not probed: on Windows ``os.kill(pid, 0)`` is no
liveness check (signal 0 is ``CTRL_C_EVENT`` there). A stale file costs one
connection error, and the daemon rewrites it when it starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import platformdirs

__all__ = [
    "ADMIN_TOKEN_FILE",
    "DAEMON_FILE",
    "DEFAULT_ENDPOINT",
    "ENV_API_KEY",
    "ENV_ENDPOINT",
    "ENV_STATE_DIR",
    "default_api_key",
    "default_endpoint",
    "state_dir",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8910
DEFAULT_ENDPOINT = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"

ENV_ENDPOINT = "LLAMAHOME_ENDPOINT"
ENV_API_KEY = "LLAMAHOME_API_KEY"
ENV_STATE_DIR = "LLAMAHOME_STATE_DIR"

DAEMON_FILE = "daemon.json"
ADMIN_TOKEN_FILE = "admin.token"

_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


def state_dir() -> Path:
    """The daemon's per-user state directory (runtime file, admin token)."""
    configured = os.environ.get(ENV_STATE_DIR)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_state_dir("llamahome"))


def _endpoint_from_runtime_file(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    host, port = data.get("host", DEFAULT_HOST), data.get("port")
    if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
        return None
    if not 0 < port < 65536:
        return None
    if host in _WILDCARD_HOSTS:
        host = DEFAULT_HOST
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def default_endpoint() -> str:
    """Where the local daemon listens; see the module docstring for the order."""
    configured = os.environ.get(ENV_ENDPOINT)
    if configured:
        return configured.rstrip("/")
    found = _endpoint_from_runtime_file(state_dir() / DAEMON_FILE)
    return found if found is not None else DEFAULT_ENDPOINT


def default_api_key() -> str | None:
    """The API key to send when none is given; ``None`` when there is none."""
    configured = os.environ.get(ENV_API_KEY)
    if configured:
        return configured.strip()
    try:
        token = (state_dir() / ADMIN_TOKEN_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None
