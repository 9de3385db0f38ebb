"""``llamahomed pull`` and ``llamahomed quantize`` as real processes."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from llamahomed.commands._progress import ProgressLine
from tests.registry.test_pull import write_catalog

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def allow_the_loopback_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pull policy refuses loopback unless named: name the test server's address."""
    monkeypatch.setenv("LLAMAHOME_SYSTEM_SETTINGS__PULL_ALLOWED_HOSTS", '["127.0.0.1"]')


async def llamahomed(*args: str) -> tuple[int, str, str]:
    """Run the CLI without blocking the loop that serves the test's HTTP server."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llamahomed", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_pull_url_with_digest(file_server: Any, tmp_path: Path) -> None:
    served, server = file_server
    store = tmp_path / "store"
    url = str(server.make_url("/tiny-llama-Q8_0.gguf"))
    code, out, err = await llamahomed("pull", url, "--sha256", served.sha256.upper(),
                                      "--models-dir", str(store))
    assert code == 0, err
    assert out.strip() == f"pulled tiny-llama-Q8_0.gguf as tiny-llama:f32 (sha256 {served.sha256}, verified)"
    assert err == ""  # no progress bar off a terminal
    assert hashlib.sha256((store / "tiny-llama-Q8_0.gguf").read_bytes()).hexdigest() == served.sha256
    code, out, _ = await llamahomed("pull", url, "--models-dir", str(store))
    assert code == 0 and "already in the store" in out


async def test_pull_catalog_id_picks_a_variant_and_says_why(file_server: Any, tmp_path: Path) -> None:
    served, server = file_server
    catalog = write_catalog(tmp_path / "catalog.toml", str(server.make_url("/any")), served.sha256,
                            len(served.body))
    code, out, err = await llamahomed("pull", "tiny-test", "--catalog", str(catalog),
                                      "--models-dir", str(tmp_path / "store"))
    assert code == 0, err
    assert "tiny-test: pulling F32" in err and "the load planner picks" in err
    assert out.startswith("pulled tiny-test-f32.gguf as tiny-test:f32") and "verified" in out


async def test_pull_refuses_a_host_the_policy_does_not_allow(
        file_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served, server = file_server
    monkeypatch.delenv("LLAMAHOME_SYSTEM_SETTINGS__PULL_ALLOWED_HOSTS")
    code, _, err = await llamahomed("pull", str(server.make_url("/m.gguf")),
                                    "--models-dir", str(tmp_path / "store"))
    assert code == 1 and "system_settings.pull_allowed_hosts" in err, err
    assert served.requests == []


async def test_pull_errors_and_resume(file_server: Any, tmp_path: Path) -> None:
    served, server = file_server
    store = tmp_path / "store"
    url = str(server.make_url("/m.gguf"))
    served.status = 404
    code, _, err = await llamahomed("pull", url, "--models-dir", str(store))
    assert code == 1 and "llamahomed: error: " in err and "does not exist (HTTP 404)" in err

    served.status, served.drop_after, served.drops = None, 400_000, 1
    code, _, err = await llamahomed("pull", url, "--retries", "0", "--models-dir", str(store))
    assert code == 1 and "run the same pull again to resume" in err
    assert "cannot be verified" in err  # no --sha256 given
    code, out, err = await llamahomed("pull", url, "--models-dir", str(store))
    assert code == 0, err
    assert "resumed at" in out and "NOT verified" in out and served.sha256 in out
    assert served.requests[-1]["Range"] == "bytes=400000-"


async def test_quantize_command(models_dir: Path) -> None:
    code, out, err = await llamahomed("quantize", "tiny-llama", "q8_0", "--threads", "1",
                                      "--models-dir", str(models_dir))
    assert code == 0, err
    assert out.startswith("wrote tiny-llama-Q8_0.gguf") and "as tiny-llama:q8_0" in out
    assert "quantizing tiny-llama.gguf (F32" in err
    code, _, err = await llamahomed("quantize", "tiny-llama.gguf", "Q8_0",
                                    "--models-dir", str(models_dir))
    assert code == 1 and "already exists" in err
    code, _, err = await llamahomed("quantize", "tiny-llama", "Q3_X", "--models-dir", str(models_dir))
    assert code == 1 and "unknown quantization type 'Q3_X'" in err
    code, out, _ = await llamahomed("models", "list", "--models-dir", str(models_dir))
    assert "tiny-llama-Q8_0.gguf" in out and "tiny-llama.gguf" in out


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_draws_on_a_terminal_only() -> None:
    tty = _Tty()
    line = ProgressLine(tty, interval=0)
    line.bytes("m.gguf", 500_000, 1_000_000)
    line.steps("m -> Q8_0", 3, 21, 65.0)
    line.close()
    text = tty.getvalue()
    assert text.startswith("\rm.gguf [############            ]  50.0%  500KB/1.0MB")
    assert "3/21 tensors  1m05s" in text and text.endswith("\n")
    quiet = io.StringIO()
    silent = ProgressLine(quiet, interval=0)
    silent.bytes("m.gguf", 1, 2)
    silent.close()
    assert quiet.getvalue() == ""


def test_quantize_help_lists_every_type() -> None:
    from llamahomed.cli import build_parser
    from llamahomed.registry.quantize import QUANT_TYPES

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices["quantize"].format_help()  # type: ignore[attr-defined]
    assert all(name in text for name in QUANT_TYPES if name != "F32")


async def test_pull_draws_a_progress_bar_on_a_terminal(file_server: Any, tmp_path: Path) -> None:
    import pty
    import threading

    served, server = file_server
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llamahomed", "pull", str(server.make_url("/p.gguf")),
        "--sha256", served.sha256, "--models-dir", str(tmp_path), stdout=asyncio.subprocess.PIPE,
        stderr=slave, stdin=asyncio.subprocess.DEVNULL)
    os.close(slave)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    reader.join(timeout=10)
    os.close(master)
    assert proc.returncode == 0
    shown = b"".join(chunks).decode()
    assert "\rp.gguf [" in shown and "100.0%" in shown and shown.endswith("\r\n")
    assert out.decode().startswith("pulled p.gguf")
