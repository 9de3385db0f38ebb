"""Tokens and secrets never reach a log: in-process (structlog and stdlib) and the real daemon."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from llamahomed.core.authority import read_keys
from tests.fixtures.daemon import start_daemon
from tests.security.helpers import bearer, issue


def secrets_of(settings: Any, *tokens: str) -> list[str]:
    """Everything that must never be logged: tokens, their signatures, the keys."""
    found = [*tokens, *(t.rsplit(".", 1)[1] for t in tokens), *read_keys(settings.secret_file)]
    admin = settings.admin_token_file.read_text().strip()
    return [*found, admin, admin.rsplit(".", 1)[1]]


async def test_requests_log_no_token_and_no_secret(api: Any, settings: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = issue(settings, "alice")
    admin = bearer(settings.admin_token_file.read_text().strip())
    with capture_logs() as events:
        await api.get("/api/v1/models", headers=bearer(token))
        await api.post("/api/v1/process", headers=bearer(token),
                       json={"prompt": "a", "max_tokens": 2, "temperature": 0})
        await api.get("/api/v1/models", headers=bearer(token + "x"))  # tampered
        await api.get("/api/v1/models", headers={"Authorization": f"Basic {token}"})
        await api.get(f"/api/v1/models?token={token}", headers=admin)
        await api.post("/api/v1/config", headers=bearer(token), json={})  # 403
        await api.get(f"/no/such/{token}", headers=bearer(token))  # 404: the path is not logged
    # aiohttp's access log is the test server's (it logs query strings); the daemon runs without
    # it (access_log=None), which the e2e test below checks on the real process.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    text = json.dumps(events, default=str) + ours
    assert len(events) >= 7  # one summary line per request at least
    for secret in secrets_of(settings, token):
        assert secret not in text


def _get(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


@pytest.mark.e2e
def test_the_real_daemon_logs_no_token_and_no_secret(tmp_path: Path, models_dir: Path,
                                                     settings: Any) -> None:
    env = {**os.environ, "LLAMAHOME_LOG_LEVEL": "debug", "LLAMAHOME_LOG_FORMAT": "json",
           "LLAMAHOME_INSTALL_DEFAULT_MODEL": "0"}
    created = subprocess.run([sys.executable, "-m", "llamahomed", "token", "create", "--user",
                              "alice", "--tier", "pro"], capture_output=True, text=True, env=env,
                             check=True, timeout=60)
    token = created.stdout.strip()
    assert token.count(".") >= 2 and token not in created.stderr
    listing = subprocess.run([sys.executable, "-m", "llamahomed", "token", "list"],
                             capture_output=True, text=True, env=env, check=True, timeout=60)
    with start_daemon(tmp_path / "daemon", env, args=["--models-dir", str(models_dir)]) as daemon:
        base = daemon.url
        assert _get(f"{base}/api/v1/models", bearer(token)) == 200
        assert _get(f"{base}/api/v1/models", bearer(token[:-3] + "abc")) == 401
        assert _get(f"{base}/api/v1/config?token={token}", {}) == 401
        assert _get(f"{base}/api/v1/models", {**bearer(token), "Host": f"evil.example:{daemon.port}"}) == 403
        request = urllib.request.Request(
            f"{base}/api/v1/process", method="POST", headers={**bearer(token),
                                                              "Content-Type": "application/json"},
            data=json.dumps({"model": "tiny-llama", "prompt": "the cat", "max_tokens": 3,
                             "temperature": 0}).encode())
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
            assert json.loads(response.read())["usage"]["completion_tokens"] == 3
    output = daemon.output()  # stdout and stderr; start_daemon checked the clean exit
    assert '"request"' in output  # the summary lines are there, and nothing secret in them
    everything = output + listing.stdout + listing.stderr + created.stderr
    for secret in secrets_of(settings, token):
        assert secret not in everything
