"""systemd's readiness protocol (sd_notify) without a dependency: one datagram per state.

systemd (``Type=notify``) passes ``NOTIFY_SOCKET``: a path, or an abstract socket name starting
with ``@``. The daemon sends ``READY=1`` once it listens, ``RELOADING=1`` and ``READY=1`` around
a config reload, and ``STOPPING=1`` when it begins to shut down. Without the variable (started by
hand, launchd, tests) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import MutableMapping

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """Sends state lines to the service manager, if there is one."""

    def __init__(self, address: str | None) -> None:
        self.address = address

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] = os.environ) -> Notifier:
        """Take ``NOTIFY_SOCKET`` out of the environment (so model workers do not inherit it)."""
        return cls(environ.pop("NOTIFY_SOCKET", None) or None)

    def send(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram; False when there is no socket or it failed."""
        if not self.address:
            return False
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(address)
                sock.sendall("\n".join(lines).encode())
        except OSError as exc:
            log.warning("notify_failed", socket=self.address, error=str(exc))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", f"STATUS={status}" if status else "STATUS=ready",
                         f"MAINPID={os.getpid()}")

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=draining requests")
