"""The client imports and works with llama-cpp-python and the daemon absent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import llamahome

CLIENT_DIR = Path(llamahome.__file__).resolve().parent.parent

SCRIPT = r"""
import importlib
import pkgutil
import sys

BLOCKED = ("llama_cpp", "llamahomed")


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None


sys.meta_path.insert(0, Blocker())
for name in BLOCKED:
    sys.modules.pop(name, None)

import llamahome

assert "aiohttp" not in sys.modules, "import llamahome should not import aiohttp"
names = ["llamahome"] + [
    "llamahome." + info.name for info in pkgutil.iter_modules(llamahome.__path__)
]
for name in names:
    importlib.import_module(name)

from llamahome import APIClient

client = APIClient(api_key="k", endpoint="http://127.0.0.1:1")
assert not any(m.split(".")[0] in BLOCKED for m in sys.modules)
print(len(names), "modules")
"""


def test_every_module_imports_without_llama_cpp_or_daemon(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(CLIENT_DIR),
        "LLAMAHOME_STATE_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[0]) >= 8
    assert result.stderr == ""
