"""Settings sources, sizes and the atomic config file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from llamahomed.core.config_store import ConfigStore
from llamahomed.core.files import atomic_write
from llamahomed.core.errors import StartupError, ValidationFailed
from llamahomed.core.settings import Settings, format_size, parse_size


def test_env_overrides_file_and_arguments_override_env(isolated_env: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    config = isolated_env / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('port = 1111\n[model_settings]\ndefault_model = "from-file"\n')
    assert Settings().port == 1111
    monkeypatch.setenv("LLAMAHOME_PORT", "2222")
    monkeypatch.setenv("LLAMAHOME_MODEL_SETTINGS__TEMPERATURE", "0.1")
    settings = Settings()
    assert settings.port == 2222
    assert settings.model_settings.default_model == "from-file"
    assert settings.model_settings.temperature == 0.1
    assert Settings(port=3333).port == 3333


def test_defaults_bind_loopback_and_use_the_default_model() -> None:
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.model_settings.default_model == "gemma3-270m"
    assert settings.models_path == settings.data_dir / "models"


def test_a_broken_config_file_is_a_startup_error(isolated_env: Path) -> None:
    config = isolated_env / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("port = = 1\n")
    with pytest.raises(StartupError, match="cannot read config file"):
        Settings()


@pytest.mark.parametrize(("text", "expected"), [("10GB", 10**10), ("512MiB", 512 * 2**20),
                                                ("1.5 kb", 1500), ("42", 42)])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        parse_size("ten gigs")


def test_format_size() -> None:
    assert format_size(8 * 10**9) == "8.0GB"
    assert format_size(253_113_024) == "253MB"


def test_atomic_write_replaces_whole_files_with_the_mode_asked(tmp_path: Path) -> None:
    target = tmp_path / "f.toml"
    atomic_write(target, b"one")
    atomic_write(target, b"two", mode=0o600)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f.toml"]


def test_config_update_validates_before_writing(tmp_path: Path) -> None:
    store = ConfigStore(Settings(config_file=tmp_path / "c.toml"))
    with pytest.raises(ValidationFailed) as info:
        store.update({"system_settings": {"cache_size": "lots"}})
    assert info.value.details["errors"][0]["field"] == "system_settings.cache_size"
    assert not (tmp_path / "c.toml").exists()
    store.update({"system_settings": {"n_threads": 2}})
    store.update({"system_settings": {"n_threads": None}})
    assert store.settings.system_settings.n_threads is None
    assert "n_threads" not in (tmp_path / "c.toml").read_text()


def test_kill_9_during_config_writes_never_leaves_a_broken_file(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from llamahomed.core.settings import read_config_file

    target = tmp_path / "config.toml"
    writer = subprocess.Popen([sys.executable, "-c", f"""
import tomli_w
from pathlib import Path
from llamahomed.core.files import atomic_write
i = 0
while True:
    i += 1
    doc = {{"model_settings": {{"max_tokens": i, "pad": "x" * (i % 5000)}}}}
    atomic_write(Path({str(target)!r}), tomli_w.dumps(doc).encode())
"""])
    try:
        for _ in range(100):
            if target.exists():
                break
            time.sleep(0.05)
        for _ in range(5):
            time.sleep(0.2)
            assert read_config_file(target)["model_settings"]["max_tokens"] >= 1
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert read_config_file(target)["model_settings"]["max_tokens"] >= 1
