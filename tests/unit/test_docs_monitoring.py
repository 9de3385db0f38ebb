"""Every Python block in docs/Monitoring.md runs as written (no daemon needed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "Monitoring.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_doc_has_the_guides_four_examples() -> None:
    text = "".join(BLOCKS)
    for name in ("MetricsCollector", "AdvancedMetrics", "PerformanceMonitor", "ResourceMonitor"):
        assert f"from llamahome.monitoring import {name}" in text or name in text


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_block_runs(index: int, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-W", "error", "-c", BLOCKS[index]], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
