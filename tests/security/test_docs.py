"""Every python and sh block of docs/Security.md runs as written (in throwaway dirs)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOC = ROOT / "docs" / "Security.md"
BLOCK_RE = re.compile(r"^```(python|sh)\n(.*?)^```", re.MULTILINE | re.DOTALL)
BLOCKS = BLOCK_RE.findall(DOC.read_text())


def test_the_doc_has_blocks_to_run() -> None:
    assert {lang for lang, _ in BLOCKS} == {"python", "sh"} and len(BLOCKS) >= 7


@pytest.mark.parametrize("lang, code", BLOCKS, ids=[f"{lang}-{i}" for i, (lang, _) in enumerate(BLOCKS)])
def test_doc_block_runs(lang: str, code: str, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if lang == "python":
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-euo", "pipefail", "-c", code.replace("python3 ", f"{sys.executable} ")]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
