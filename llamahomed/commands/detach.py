"""``llamahomed start --detach``: run the daemon in the background without a service manager.

The child is ``llamahomed start`` with the same options in a new session (no terminal), its
output appended to ``<state dir>/llamahomed.log`` (JSON lines; mode 0600 whatever the umask).
This returns once the child wrote its runtime and pid files (it listens), or fails with the
log's last line if it exited. ``llamahomed stop`` ends it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from llamahomed.commands.runtime import base_url, running_daemon
from llamahomed.core.errors import StartupError
from llamahomed.core.files import open_private, private_dir
from llamahomed.core.settings import Settings

FLAGS = (("--config", "config"), ("--models-dir", "models_dir"), ("--host", "host"),
         ("--port", "port"))


def child_command(args: argparse.Namespace) -> list[str]:
    command = [sys.executable, "-m", "llamahomed", "start"]
    for flag, name in FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            command += [flag, str(value)]
    return command


def start_detached(args: argparse.Namespace, settings: Settings, timeout: float = 180.0) -> int:
    running = running_daemon(settings)
    if running is not None:
        raise StartupError(f"llamahomed is already running (pid {running['pid']}, "
                           f"{base_url(running)})")
    try:
        private_dir(settings.state_dir)
        log = os.fdopen(open_private(settings.log_file, os.O_WRONLY | os.O_APPEND), "ab")
    except OSError as exc:
        raise StartupError(f"cannot open the log file {settings.log_file}: {exc.strerror}") from exc
    with log:
        child = subprocess.Popen(child_command(args), stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runtime = running_daemon(settings)
        if runtime is not None and runtime.get("pid") == child.pid:
            print(f"started llamahomed (pid {child.pid}) at {base_url(runtime)}; "
                  f"log: {settings.log_file}; pid file: {settings.pid_file}")
            return 0
        if child.poll() is not None:
            raise StartupError(f"llamahomed exited with code {child.returncode}: {_last_line(settings)}")
        time.sleep(0.1)
    child.terminate()
    raise StartupError(f"llamahomed did not start listening within {timeout:g}s; see {settings.log_file}")


def _last_line(settings: Settings) -> str:
    try:
        lines = settings.log_file.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"
