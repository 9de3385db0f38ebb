"""The wheel carries every package and the console's files (setuptools lists them by hand)."""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def test_every_package_under_llamahomed_is_listed() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "llamahomed").rglob("__init__.py")}
    assert found <= set(setuptools["packages"]), sorted(found - set(setuptools["packages"]))


def test_the_console_files_ship_as_package_data() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-data"]["llamahomed.console"] == ["static/*"]
    static = ROOT / "llamahomed" / "console" / "static"
    assert {p.name for p in static.iterdir()} >= {"index.html", "app.js", "style.css"}
