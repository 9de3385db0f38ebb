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


def _package_imports(path: Path) -> set[str]:
    """The ``llamahome`` modules that ``path`` imports at module level (not under TYPE_CHECKING)."""
    import ast

    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llamahome."):
            found.add((node.module or "").split(".")[1])
    return found


def test_the_client_modules_import_each_other_without_a_cycle() -> None:
    package = CLIENT_DIR / "llamahome"
    graph = {p.stem: _package_imports(p) for p in package.glob("*.py") if p.stem != "__init__"}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path, name))
        if name in done or name not in graph:
            return
        for imported in graph[name]:
            visit(imported, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())
    assert graph["_retry"] and "error" not in graph["_retry"]
