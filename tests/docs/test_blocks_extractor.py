"""The Markdown block extractor and runner behind test_doc_blocks.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.docs.blocks import extract, opted_in, to_daemon

RUNNER = Path(__file__).with_name("run_blocks.py")

DOC = """# Title
<!-- test-blocks -->

```python
x = 1
```

```json
{"not": "run"}
```

<!-- skip-test: runs in the foreground -->

```bash
llamahomed start
```

1. A list item with an indented block:

   ```sh
   echo indented
   ```

~~~py title="tilde fence"
y = x + 1
~~~

```
plain, no language
```
"""


def test_blocks_languages_lines_skips_and_indentation() -> None:
    blocks = extract(DOC)
    assert [(b.language, b.line, b.skipped) for b in blocks] == [
        ("python", 4, False), ("bash", 14, True), ("bash", 20, False), ("python", 24, False)]
    assert blocks[2].code == "echo indented\n" and blocks[3].code == "y = x + 1\n"
    assert opted_in(DOC) and not opted_in("# no marker")


def test_the_default_address_points_at_the_test_daemon() -> None:
    code = "curl localhost:8910/health; curl http://127.0.0.1:8910/x; echo localhost:89100"
    assert to_daemon(code, "http://127.0.0.1:4242") == (
        "curl 127.0.0.1:4242/health; curl http://127.0.0.1:4242/x; echo localhost:89100")


def run(tmp_path: Path, blocks: list[dict[str, object]]) -> subprocess.CompletedProcess[str]:
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"doc": "docs/T.md", "timeout": 30, "blocks": blocks}))
    return subprocess.run([sys.executable, str(RUNNER), str(job)], capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)


def test_runner_shares_python_state_allows_top_level_await_and_runs_bash(tmp_path: Path) -> None:
    result = run(tmp_path, [
        {"language": "python", "line": 1, "code": "import asyncio\nvalue = 20\n"},
        {"language": "python", "line": 5, "code": "await asyncio.sleep(0)\nvalue += 1\n"},
        {"language": "python", "line": 9, "code": "open('out.txt', 'w').write(str(value * 2))\n"},
        {"language": "bash", "line": 12, "code": "test \"$(cat out.txt)\" = 42\n"},
    ])
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(" took ") == 4


def test_runner_names_the_failing_block_and_stops(tmp_path: Path) -> None:
    result = run(tmp_path, [
        {"language": "bash", "line": 3, "code": "echo ok\n"},
        {"language": "python", "line": 8, "code": "assert 1 == 2, 'boom'\n"},
        {"language": "bash", "line": 12, "code": "echo never\n"},
    ])
    assert result.returncode == 1
    assert "FAILED docs/T.md:8" in result.stderr and "boom" in result.stderr
    assert "never" not in result.stdout
    failing_pipe = run(tmp_path, [{"language": "bash", "line": 1, "code": "false | true\n"}])
    assert failing_pipe.returncode == 1  # pipefail
