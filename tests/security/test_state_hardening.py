"""The state dir under a running daemon (issue 12.3, 12.14, 12.15): private modes whatever the
umask, revocation that survives ``tokens.db`` being deleted, one daemon per state dir."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from llamahomed.observability.logs import configure_logging
from tests.security.live import Live

pytestmark = pytest.mark.e2e


def _status(live: Live, token: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{live.port}/api/v1/models",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_every_state_file_is_0600_and_the_dir_0700_whatever_the_umask(
        tmp_path: Path, models_dir: Path, umask: int) -> None:
    live = Live(tmp_path / "perm", models_dir, umask=umask, wait=False)
    live.proc.kill()  # only its environment is wanted: --detach starts the daemon itself
    live.proc.wait()
    live.log.close()
    state = live.state_dir
    started = subprocess.run([sys.executable, "-m", "llamahomed", "start", "--detach", "--port",
                              "0"], env=live.env, capture_output=True, text=True, timeout=120,
                             preexec_fn=lambda: os.umask(umask), check=False)  # noqa: PLW1509
    assert started.returncode == 0, started.stderr
    try:
        created = live.cli("token", "create", "--user", "alice")  # the CLI under the same umask
        assert created.returncode == 0, created.stderr
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        names = sorted(p.name for p in state.iterdir())
        assert {"llamahomed.log", "llamahomed.pid", "daemon.json", "admin.token", "secret.key",
                "tokens.db", "llamahomed.lock"} <= set(names), names
        for path in state.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path.name, oct(path.stat().st_mode))
    finally:
        stopped = live.cli("stop")
        assert stopped.returncode == 0, stopped.stderr


def test_a_revocation_takes_effect_after_tokens_db_was_deleted(tmp_path: Path,
                                                               models_dir: Path) -> None:
    live = Live(tmp_path / "rev", models_dir)
    try:
        first = live.cli("token", "create", "--user", "alice").stdout.strip()
        second = live.cli("token", "create", "--user", "bob").stdout.strip()
        assert _status(live, first) == 200 and _status(live, second) == 200
        ids = {line.split()[1]: line.split()[0]
               for line in live.cli("token", "list").stdout.splitlines()[1:]}
        (live.state_dir / "tokens.db").unlink()
        # revoked by its full id into the fresh tokens.db the CLI creates
        revoked = live.cli("token", "revoke", ids["alice"])
        assert revoked.returncode == 0, revoked.stderr
        assert _status(live, first) == 401
        assert _status(live, second) == 200  # what the old file knew was carried over
        (live.state_dir / "tokens.db").unlink()
        assert _status(live, second) == 200  # the daemon re-creates the store with its records
        listing = live.cli("token", "list").stdout
        assert "bob" in listing and ids["alice"] in listing
        revoked = live.cli("token", "revoke", ids["bob"][:8])  # a prefix: the record is there
        assert revoked.returncode == 0, revoked.stderr
        assert _status(live, second) == 401
        assert _status(live, first) == 401  # deleting the file never un-revokes
    finally:
        assert live.stop() == 0
    assert "Traceback" not in live.output()


def test_a_second_instance_on_the_same_state_dir_exits_1_and_leaves_the_first_alone(
        tmp_path: Path, models_dir: Path) -> None:
    first = Live(tmp_path / "one", models_dir)
    try:
        runtime = (first.state_dir / "daemon.json").read_text()
        pid_file = (first.state_dir / "llamahomed.pid").read_text()
        second = subprocess.run([sys.executable, "-m", "llamahomed", "start", "--port", "0"],
                                env=first.env, capture_output=True, text=True, timeout=60,
                                check=False)
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"pid {first.proc.pid}" in lines[0] and "already running" in lines[0]
        assert (first.state_dir / "daemon.json").read_text() == runtime
        assert (first.state_dir / "llamahomed.pid").read_text() == pid_file
        status = first.cli("status")
        assert status.returncode == 0, status.stdout + status.stderr
        stopped = first.cli("stop")
        assert stopped.returncode == 0 and str(first.proc.pid) in stopped.stdout
        assert first.proc.wait(timeout=30) == 0
    finally:
        first.stop()


def test_a_crashed_daemons_lock_does_not_block_the_next_start(tmp_path: Path,
                                                              models_dir: Path) -> None:
    crashed = Live(tmp_path / "crash", models_dir)
    crashed.proc.kill()
    crashed.proc.wait()
    crashed.log.close()
    time.sleep(0.2)
    again = Live(tmp_path / "crash", models_dir)
    assert again.stop() == 0


def test_the_log_pipeline_redacts_parser_messages_tokens_and_bytes(
        capsys: pytest.CaptureFixture[str]) -> None:
    from aiohttp.http_exceptions import BadHttpMessage

    token = ".eJw1jUsKAyEUBO_SaxPib_xcZcjC0ScYjBkcBwIhd4-b7Jq.Zz1aBg.abcdefghijklmnopqrstuvwx"
    configure_logging("debug", "json")
    try:
        try:
            raise BadHttpMessage(f"Invalid header value char:\n\n  b'Authorization: Bearer {token}\\r'")
        except BadHttpMessage:
            logging.getLogger("aiohttp.server").exception("Error handling request from %s", "x")
        try:
            raise ValueError(f"odd chunk b'secret-prompt-bytes' with Bearer {token}")
        except ValueError:
            logging.getLogger("somewhere").exception("failed for %s", token)
    finally:
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "BadHttpMessage" in err and "Error handling request" in err
    assert token not in err and token.rsplit(".", 1)[1] not in err
    assert "secret-prompt-bytes" not in err and "Authorization: Bearer" not in err
    assert "ValueError" in err  # other tracebacks stay, scrubbed
