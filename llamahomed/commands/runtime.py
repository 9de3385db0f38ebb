"""Finding the running daemon from its runtime file, and talking to it over loopback."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import psutil

from llamahomed.core.errors import StartupError
from llamahomed.core.settings import Settings


def running_daemon(settings: Settings) -> dict[str, Any] | None:
    """``{"pid", "host", "port"}`` of the live daemon for these settings, else None."""
    try:
        data: dict[str, Any] = json.loads(settings.runtime_file.read_text())
    except (OSError, ValueError):
        return None
    return data if is_daemon(int(data.get("pid", 0))) else None


def is_daemon(pid: int) -> bool:
    """A live (not zombie) llamahomed process: never signal a recycled pid."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and "llamahomed" in " ".join(process.cmdline())
    except (psutil.Error, ValueError):
        return False


def base_url(runtime: dict[str, Any]) -> str:
    bare = str(runtime["host"]).strip().removeprefix("[").removesuffix("]")
    host = "127.0.0.1" if bare in ("0.0.0.0", "::", "") else f"[{bare}]" if ":" in bare else bare
    return f"http://{host}:{runtime['port']}"


def get_json(url: str, token: str | None, timeout: float = 5) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers),  # noqa: S310
                                timeout=timeout) as response:
        return json.loads(response.read())


def post_json(url: str, token: str | None, body: Any, timeout: float = 10) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers,
                                     method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def daemon_status(settings: Settings, runtime: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The running daemon's address and ``/api/v1/status`` (with the admin token), or a
    StartupError saying it does not answer."""
    url = base_url(runtime)
    try:
        status: dict[str, Any] = get_json(f"{url}/api/v1/status", admin_token(settings))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StartupError(f"llamahomed (pid {runtime['pid']}) does not answer at {url}: {exc}") from exc
    return url, status


def admin_token(settings: Settings) -> str | None:
    try:
        return settings.admin_token_file.read_text().strip() or None
    except OSError:
        return None
