"""``llamahomed rpc serve``'s arguments, and the commands docs/Distributed.md shows."""

from __future__ import annotations

import re
import shlex

import pytest

from llamahomed.cli import build_parser
from llamahomed.commands.rpc import check_bind
from llamahomed.core.errors import StartupError
from tests.conftest import ROOT


def test_every_rpc_serve_command_in_the_docs_parses() -> None:
    text = (ROOT / "docs" / "Distributed.md").read_text()
    commands = re.findall(r"^\s*(llamahomed rpc serve[^\n]*)$", text, re.MULTILINE)
    assert len(commands) >= 2
    for line in commands:
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert args.command == "rpc" and args.action == "serve"
        check_bind(args.host, args.port, args.allow_remote)  # refused binds would raise


def test_a_remote_bind_needs_allow_remote_and_then_warns() -> None:
    with pytest.raises(StartupError, match="no authentication or encryption"):
        check_bind("192.168.1.5", 50052, allow_remote=False)
    warning = check_bind("192.168.1.5", 50052, allow_remote=True)
    assert warning is not None and "NO authentication and NO encryption" in warning
    assert check_bind("127.0.0.1", 50052, allow_remote=False) is None
    assert check_bind("::1", 50052, allow_remote=False) is None
    with pytest.raises(StartupError):
        check_bind("127.0.0.1", 0, allow_remote=False)
