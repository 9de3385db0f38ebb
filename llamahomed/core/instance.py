"""One daemon per state dir: an ``flock`` on ``<state_dir>/llamahomed.lock`` held for the
daemon's whole life.

A second ``llamahomed start`` on the same state dir fails before it binds or writes anything
(so it can no longer overwrite, then delete, the first one's ``daemon.json`` and pid file),
naming the first one's pid, which the lock file holds. The kernel drops an ``flock`` when its
process dies, so a crashed daemon's lock never blocks the next start; the file itself stays
(unlinking a lock file races with the next locker).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from llamahomed.core.errors import StartupError
from llamahomed.core.files import open_private, private_dir


@contextlib.contextmanager
def instance_lock(path: Path) -> Iterator[None]:
    """Hold the state dir's lock while the block runs; StartupError if another process has it."""
    private_dir(path.parent)
    try:
        fd = open_private(path, os.O_RDWR)
    except OSError as exc:
        raise StartupError(f"cannot open the lock file {path}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StartupError(
                f"another llamahomed (pid {holder}) is already running with the state dir "
                f"{path.parent}; stop it first (llamahomed stop)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
