"""sd_notify without a library: datagrams to $NOTIFY_SOCKET, silent without one."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from llamahomed.core.notify import Notifier


def test_from_environ_takes_the_variable_out_so_workers_do_not_inherit_it() -> None:
    environ = {"NOTIFY_SOCKET": "/run/user/1000/systemd/notify", "OTHER": "x"}
    notifier = Notifier.from_environ(environ)
    assert notifier.address == "/run/user/1000/systemd/notify"
    assert environ == {"OTHER": "x"}
    assert Notifier.from_environ({}).address is None


def test_ready_reloading_stopping_arrive_as_datagrams(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        notifier = Notifier(path)
        assert notifier.ready("listening on http://127.0.0.1:1")
        assert sock.recv(4096).decode().splitlines() == [
            "READY=1", "STATUS=listening on http://127.0.0.1:1", f"MAINPID={os.getpid()}"]
        assert notifier.reloading()
        reloading = sock.recv(4096).decode().splitlines()
        assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
        assert notifier.stopping()
        assert sock.recv(4096).decode().splitlines()[0] == "STOPPING=1"


def test_no_socket_or_a_dead_one_is_not_an_error(tmp_path: Path) -> None:
    assert Notifier(None).ready() is False
    assert Notifier(str(tmp_path / "nobody-listens")).ready() is False
