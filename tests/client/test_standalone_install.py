"""``pip install ./client`` alone, into a fresh virtual environment, gives a working client.

No daemon, no llama-cpp-python, and without the ``toolkit`` extra no prometheus-client or
psutil either: the clients, tokens, rate limiters and errors import, and
``llamahome.monitoring`` says which extra it needs. Then the ``toolkit`` extra makes
monitoring importable. pip installs from the machine's configured package index (and its cache).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

ABSENT = ("llamahomed", "llama-cpp-python", "prometheus-client", "psutil", "nvidia-ml-py")

CHECK = r"""
import importlib.metadata as metadata
import sys

absent = sys.argv[1].split(",")
installed = {d.metadata["Name"].lower() for d in metadata.distributions()}
assert "llamahome" in installed, installed
assert not installed & set(absent), installed & set(absent)
base = {r.split(";")[0].split(">")[0].split("=")[0].strip().lower()
        for r in metadata.requires("llamahome") or [] if "extra ==" not in r}
assert base == {"aiohttp", "itsdangerous", "platformdirs"}, base

import llamahome, llamahome.client, llamahome.auth, llamahome.security, llamahome.error
import llamahome.codes, llamahome.server, llamahome.types, llamahome.websocket

assert llamahome.__file__.startswith(sys.prefix), llamahome.__file__  # the installed copy
from llamahome.error import APIError, CircuitBreaker, RateLimitError, RetryHandler
from llamahome.error import AuthenticationError, ModelTooLargeError

client = llamahome.client.APIClient(api_key="k", endpoint="http://127.0.0.1:1")
token = llamahome.auth.TokenGenerator(secret_key="s").create_token(user_id="u")
assert llamahome.auth.TokenValidator(secret_key="s").validate_token(token)
assert not RetryHandler().is_retryable(ModelTooLargeError("m", status=507))

try:
    llamahome.server.LlamaServer()
except ImportError as exc:
    assert "pip install 'llamahome[server]'" in str(exc), exc
else:
    raise AssertionError("LlamaServer() without llamahomed")

try:
    import llamahome.monitoring
except ImportError as exc:
    assert "pip install 'llamahome[toolkit]'" in str(exc), exc
    print("monitoring:", exc)
else:
    raise AssertionError("llamahome.monitoring imported without the toolkit extra")
"""


def _pip(python: Path, *args: str) -> None:
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", *args],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_client_installs_and_imports_alone_and_the_toolkit_extra_adds_monitoring(
        tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    client_dir = tmp_path / "client"  # a copy: the build must not write into the work tree
    shutil.copytree(ROOT / "client", client_dir,
                    ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__", "js"))
    _pip(python, str(client_dir))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    run = subprocess.run([str(python), "-W", "error", "-c", CHECK, ",".join(ABSENT)],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "pip install 'llamahome[toolkit]'" in run.stdout

    _pip(python, f"{client_dir}[toolkit]")
    run = subprocess.run(
        [str(python), "-W", "error", "-c",
         "import llamahome.monitoring as m; assert b'# HELP' in m.AdvancedMetrics().render()"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_daemon_depends_on_this_client_and_ships_no_copy_of_it() -> None:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    import llamahome

    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert f"llamahome[toolkit]=={llamahome.__version__}" in root["project"]["dependencies"]
    setuptools = root["tool"]["setuptools"]
    assert not [p for p in setuptools["packages"] if p.split(".")[0] == "llamahome"]
    assert "llamahome" not in setuptools["package-dir"]
    client = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    assert set(client["optional-dependencies"]) == {"toolkit", "gpu", "server"}
    assert Path(llamahome.__file__).is_relative_to(ROOT / "client")  # scripts/install's copy
