"""Logging is configured once: JSON lines off a terminal, console text on one, stdlib included.

Each case runs in its own interpreter: structlog's configuration is process-wide.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

SCRIPT = r"""
import logging, sys
import structlog
from llamahomed.observability.logs import configure_logging
configure_logging("info", sys.argv[1])
structlog.get_logger("llamahomed.test").info("hello", answer=42)
logging.getLogger("aiohttp.server").error("stdlib says %s", "hi")
logging.getLogger("llamahome.monitoring").info("trace", extra={"monitoring": {"phase": "decode"}})
logging.getLogger("aiohttp.access").info("dropped: the summary line replaces it")
structlog.get_logger("x").debug("below the level")
"""


def run(fmt: str, stderr: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, fmt], stderr=stderr or subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, timeout=60, check=True)


def test_off_a_terminal_every_line_is_json_stdlib_included() -> None:
    lines = [json.loads(line) for line in run("auto").stderr.splitlines()]
    assert [line["event"] for line in lines] == ["hello", "stdlib says hi", "trace"]
    assert lines[0]["answer"] == 42 and lines[0]["level"] == "info" and "timestamp" in lines[0]
    assert lines[1]["logger"] == "aiohttp.server" and lines[1]["level"] == "error"
    assert lines[2]["monitoring"] == {"phase": "decode"}


def test_on_a_terminal_it_is_readable_text() -> None:
    controller, terminal = pty.openpty()
    try:
        subprocess.run([sys.executable, "-c", SCRIPT, "auto"], stderr=terminal,
                       stdout=subprocess.PIPE, timeout=60, check=True)
        os.close(terminal)
        output = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
    text = output.decode()
    assert "hello" in text and "answer" in text and "stdlib says hi" in text
    assert not text.lstrip().startswith("{")


def test_console_can_be_forced() -> None:
    err = run("console").stderr
    assert "hello" in err and not err.startswith("{")
