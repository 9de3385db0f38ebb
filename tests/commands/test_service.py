"""``llamahomed service``: the unit and the plist it writes, checked by systemd and plistlib.

Nothing here enables anything: the service-manager call is injected (or ``--no-enable``).
"""

from __future__ import annotations

import argparse
import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from llamahomed.cli import main
from llamahomed.commands import service
from llamahomed.core.settings import Settings

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "user home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return home


def verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze --user verify``. It needs a user runtime dir (XDG_RUNTIME_DIR) to set
    up its throw-away manager; a private one is enough, no running systemd is needed."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, "--user", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
                          check=False)


class Recorder:
    def __init__(self, returncode: int = 0) -> None:
        self.commands: list[list[str]] = []
        self.returncode = returncode

    def __call__(self, command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.commands.append(list(command))
        return subprocess.CompletedProcess(list(command), self.returncode, "", "no user bus")


def test_install_no_enable_writes_a_unit_with_this_installations_paths(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "my config %d.toml"
    assert main(["service", "install", "--no-enable", "--platform", "systemd",
                 "--config", str(config), "--models-dir", str(tmp_path / "m")]) == 0
    unit = home / ".config" / "systemd" / "user" / "llamahomed.service"
    assert f"wrote {unit}" in capsys.readouterr().out
    text = unit.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_start.startswith(f"ExecStart={sys.executable} -m llamahomed start --config \"")
    assert "my config %%d.toml" in exec_start  # systemd specifiers escaped, spaces quoted
    assert "Type=notify" in text and "Restart=on-failure" in text
    options = [line.split("=")[0] for line in text.splitlines() if "=" in line and line[0] != "#"]
    assert "NoNewPrivileges" in options
    assert "ProtectSystem" not in options  # needs a mount namespace: not for user units


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_passes_on_the_written_unit(home: Path, tmp_path: Path) -> None:
    settings = Settings()
    args = argparse.Namespace(config=tmp_path / "a b.toml", models_dir=None)
    where = service.install(settings, args, enable=False, platform="systemd")
    result = verify(where.path, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # not even a warning


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_catches_a_broken_unit(home: Path, tmp_path: Path) -> None:
    """The check above can fail: a typo in the unit shows up in verify's output."""
    broken = tmp_path / "broken.service"
    broken.write_text(service.render_unit([sys.executable]).replace("Type=notify", "Type=notfy"))
    assert "Failed to parse service type" in verify(broken, tmp_path).stderr


def test_install_enables_through_systemctl_user(home: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    runner = Recorder()
    service.install(Settings(), argparse.Namespace(), enable=True, runner=runner,
                    platform="systemd")
    assert runner.commands == [["systemctl", "--user", "daemon-reload"],
                               ["systemctl", "--user", "enable", "--now", "llamahomed.service"]]
    assert "enabled and started" in capsys.readouterr().out


def test_without_a_user_manager_the_file_stays_and_the_command_is_printed(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = service.install(Settings(), argparse.Namespace(), enable=True, runner=Recorder(1),
                            platform="systemd")
    assert where.path.exists()
    out = capsys.readouterr().out
    assert "no user bus" in out and "systemctl --user enable --now llamahomed.service" in out


def test_uninstall_disables_and_removes(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = service.install(Settings(), argparse.Namespace(), enable=False, platform="systemd")
    runner = Recorder()
    assert service.status("systemd", runner) in (0, 3)
    service.uninstall("systemd", runner)
    assert not where.path.exists()
    assert ["systemctl", "--user", "disable", "--now", "llamahomed.service"] in runner.commands
    assert service.status("systemd", runner) == 3
    assert "not installed" in capsys.readouterr().out


def test_the_launchd_agent_is_a_valid_plist_with_this_installations_paths(
        home: Path, tmp_path: Path) -> None:
    settings = Settings()
    runner = Recorder()
    where = service.install(settings, argparse.Namespace(models_dir=tmp_path / "models"),
                            enable=True, runner=runner, platform="launchd")
    assert where.path == home / "Library" / "LaunchAgents" / "com.llamahome.llamahomed.plist"
    with where.path.open("rb") as fh:
        agent = plistlib.load(fh)
    assert agent["Label"] == "com.llamahome.llamahomed"
    assert agent["ProgramArguments"] == [sys.executable, "-m", "llamahomed", "start",
                                         "--models-dir", str((tmp_path / "models").resolve())]
    assert agent["RunAtLoad"] is True and agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["StandardErrorPath"] == str(settings.log_file)
    assert runner.commands[-1] == ["launchctl", "bootstrap", f"gui/{os.getuid()}", str(where.path)]


def test_the_shipped_templates_are_the_ones_in_the_repository() -> None:
    root = Path(__file__).resolve().parents[2] / "systemd"
    from importlib import resources

    data = resources.files("llamahomed.service_data")
    assert data.joinpath("llamahomed.service").read_text() == (root / "llamahomed.service").read_text()
    with (root / "com.llamahome.llamahomed.plist").open("rb") as fh:
        assert plistlib.load(fh)["Label"] == "com.llamahome.llamahomed"
