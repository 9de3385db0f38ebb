"""The configured RPC servers as the planner sees them: read, cached, and left out with a reason.

A ggml RPC server serves one client at a time: while a loaded model's worker holds a server, a
new reading would wait for it. So a server in use by the model being planned keeps the reading
taken before that model loaded (its memory is that model's to reuse), and one in use by another
model is left out of the plan. Every other server is probed (a TCP connect with a timeout) at
every plan, and its devices read through ggml at most every ``ttl`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from llamahomed.core.resources import Machine
from llamahomed.engine.rpc import RemoteDevice, read_remote_devices, unreachable
from llamahomed.planner.remote import with_remotes

Reader = Callable[[Sequence[str]], tuple[list[RemoteDevice], dict[str, str]]]


class RemoteHosts:
    """Readings of RPC servers, kept per endpoint."""

    def __init__(self, read: Reader = read_remote_devices, ttl: float = 5.0) -> None:
        self._read, self._ttl = read, ttl
        self._last: dict[str, tuple[float, list[RemoteDevice]]] = {}
        self._lock = threading.Lock()

    def machine(self, machine: Machine, endpoints: Sequence[str], in_use: Mapping[str, str],
                model: str) -> Machine:
        """``machine`` plus the devices of ``endpoints`` that may take layers of ``model``
        (``in_use``: endpoint -> the model whose worker holds it)."""
        with self._lock:
            devices: list[RemoteDevice] = []
            problems: dict[str, str] = {}
            fresh = []
            for ep in endpoints:
                owner = in_use.get(ep)
                if owner is not None and owner != model:
                    problems[ep] = (f"in use by model {owner!r} (an RPC server serves one "
                                    "client at a time)")
                elif owner is not None and ep in self._last:
                    devices += self._last[ep][1]
                else:
                    fresh.append(ep)
            problems.update(unreachable(fresh))
            now = time.monotonic()
            stale = [ep for ep in fresh if ep not in problems
                     and (ep not in self._last or now - self._last[ep][0] > self._ttl)]
            read, failed = self._read(stale) if stale else ([], {})
            problems.update(failed)
            for ep in stale:
                if ep not in failed:
                    self._last[ep] = (now, [d for d in read if d.endpoint == ep])
            for ep in fresh:
                if ep not in problems and ep in self._last:
                    devices += self._last[ep][1]
            order = {ep: i for i, ep in enumerate(endpoints)}
            devices.sort(key=lambda d: (order.get(d.endpoint, 0), d.index))
            return with_remotes(machine, devices, {ep: problems[ep] for ep in endpoints
                                                   if ep in problems})

    def forget(self, endpoint: str) -> None:
        with self._lock:
            self._last.pop(endpoint, None)


def in_use(workers: Mapping[str, Any]) -> dict[str, str]:
    """endpoint -> model id, for every live worker loaded across RPC servers."""
    return {ep: model for model, w in workers.items() for ep in w.config.rpc_servers}
