"""``llamahomed service install|uninstall|status``: a systemd user unit or a launchd agent.

``install`` writes the unit (Linux: ``$XDG_CONFIG_HOME/systemd/user/llamahomed.service``) or
the agent (macOS: ``~/Library/LaunchAgents/com.llamahome.llamahomed.plist``) from the templates
in ``systemd/``, with this installation's Python and the ``--config``/``--models-dir`` given,
then enables and starts it (``systemctl --user enable --now``, ``launchctl bootstrap``) unless
``--no-enable``. Where the service manager cannot be reached the file is still written and the
command to run is printed. The manager call is a parameter so tests never touch the machine.
"""

from __future__ import annotations

import argparse
import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from llamahomed.core.files import private_dir
from llamahomed.core.settings import Settings

UNIT_NAME = "llamahomed.service"
AGENT_LABEL = "com.llamahome.llamahomed"

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_command(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a service-manager command; a missing program is a failed result, not an exception."""
    try:
        return subprocess.run(list(command), capture_output=True, text=True, timeout=60,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(list(command), 127, "", str(exc))


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("service", help="run llamahomed as a systemd user unit / launchd agent",
                            parents=[common])
    actions = parser.add_subparsers(dest="action", required=True)
    for name, help_text in (("install", "write the unit for this user and enable it"),
                            ("uninstall", "disable and remove the unit"),
                            ("status", "where the unit is and what the manager says")):
        action = actions.add_parser(name, help=help_text, parents=[common])
        action.add_argument("--platform", choices=["systemd", "launchd"], default=None,
                            help="service manager (default: launchd on macOS, else systemd)")
        if name == "install":
            action.add_argument("--no-enable", action="store_true",
                                help="only write the file; do not enable or start it")


@dataclass(frozen=True)
class Target:
    platform: str
    path: Path


def target(platform: str | None = None) -> Target:
    platform = platform or ("launchd" if sys.platform == "darwin" else "systemd")
    if platform == "launchd":
        return Target(platform, Path.home() / "Library" / "LaunchAgents" / f"{AGENT_LABEL}.plist")
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return Target(platform, config_home / "systemd" / "user" / UNIT_NAME)


def start_command(settings: Settings, args: argparse.Namespace) -> list[str]:
    """How the service starts this installation: its Python, ``-m llamahomed start`` and the
    config file and model store given on this command line (made absolute)."""
    command = [sys.executable, "-m", "llamahomed", "start"]
    if getattr(args, "config", None) is not None:
        command += ["--config", str(Path(args.config).resolve())]
    if getattr(args, "models_dir", None) is not None:
        command += ["--models-dir", str(Path(args.models_dir).resolve())]
    return command


def _systemd_quote(arg: str) -> str:
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if any(c in escaped for c in " \t\"'\\;") or not escaped:
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def render_unit(command: Sequence[str]) -> str:
    template = resources.files("llamahomed.service_data").joinpath(UNIT_NAME).read_text()
    lines = [f"ExecStart={' '.join(_systemd_quote(a) for a in command)}"
             if line.startswith("ExecStart=") else line for line in template.splitlines()]
    return "\n".join(lines) + "\n"


def render_plist(command: Sequence[str], log_file: Path) -> bytes:
    template = resources.files("llamahomed.service_data").joinpath(f"{AGENT_LABEL}.plist")
    agent = plistlib.loads(template.read_bytes())
    agent["ProgramArguments"] = list(command)
    agent["StandardOutPath"] = agent["StandardErrorPath"] = str(log_file)
    return plistlib.dumps(agent)


def install(settings: Settings, args: argparse.Namespace, *, enable: bool = True,
            runner: Runner = run_command, platform: str | None = None) -> Target:
    where = target(platform)
    where.path.parent.mkdir(parents=True, exist_ok=True)
    command = start_command(settings, args)
    if where.platform == "systemd":
        where.path.write_text(render_unit(command))
    else:
        private_dir(settings.state_dir)
        where.path.write_bytes(render_plist(command, settings.log_file))
    print(f"wrote {where.path}")
    if enable:
        _enable(where, runner)
    return where


def _enable(where: Target, runner: Runner) -> None:
    if where.platform == "systemd":
        steps = [["systemctl", "--user", "daemon-reload"],
                 ["systemctl", "--user", "enable", "--now", UNIT_NAME]]
        manual = f"systemctl --user daemon-reload && systemctl --user enable --now {UNIT_NAME}"
    else:
        domain = f"gui/{os.getuid()}"
        steps = [["launchctl", "bootout", f"{domain}/{AGENT_LABEL}"],
                 ["launchctl", "bootstrap", domain, str(where.path)]]
        manual = f"launchctl bootstrap {domain} {where.path}"
    for step in steps:
        result = runner(step)
        if result.returncode != 0 and step[1] != "bootout":  # bootout fails when not loaded
            reason = (result.stderr or result.stdout).strip().splitlines()
            print(f"could not run {' '.join(step)}: {reason[-1] if reason else result.returncode}")
            print(f"the file is written; enable it yourself with: {manual}")
            return
    print("enabled and started" if where.platform == "systemd" else "loaded")


def uninstall(platform: str | None = None, runner: Runner = run_command) -> Target:
    where = target(platform)
    if where.platform == "systemd":
        runner(["systemctl", "--user", "disable", "--now", UNIT_NAME])
    else:
        runner(["launchctl", "bootout", f"gui/{os.getuid()}/{AGENT_LABEL}"])
    if where.path.exists():
        where.path.unlink()
        print(f"removed {where.path}")
    else:
        print(f"{where.path} was not installed")
    if where.platform == "systemd":
        runner(["systemctl", "--user", "daemon-reload"])
    return where


def status(platform: str | None = None, runner: Runner = run_command) -> int:
    where = target(platform)
    if not where.path.exists():
        print(f"not installed ({where.path} does not exist)")
        return 3
    print(f"installed: {where.path}")
    if where.platform == "systemd":
        enabled = runner(["systemctl", "--user", "is-enabled", UNIT_NAME])
        active = runner(["systemctl", "--user", "is-active", UNIT_NAME])
        if enabled.returncode == 127 or shutil.which("systemctl") is None:
            print("systemctl is not available here")
            return 0
        print(f"enabled: {enabled.stdout.strip() or enabled.stderr.strip()}")
        print(f"active: {active.stdout.strip() or active.stderr.strip()}")
        return 0 if active.returncode == 0 else 3
    listed = runner(["launchctl", "print", f"gui/{os.getuid()}/{AGENT_LABEL}"])
    print("loaded" if listed.returncode == 0 else "not loaded")
    return 0 if listed.returncode == 0 else 3


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "install":
        install(settings, args, enable=not args.no_enable, platform=args.platform)
        return 0
    if args.action == "uninstall":
        uninstall(args.platform)
        return 0
    return status(args.platform)
