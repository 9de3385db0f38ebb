"""Run one document's blocks in order, in this process: ``python run_blocks.py BLOCKS.json``.

Python blocks share one namespace (run as ``__main__``), like a notebook: a client made in one
block is there in the next. A block with a top-level ``await`` runs in ``asyncio.run``. Bash blocks
run with ``bash -euo pipefail``. The first failing block ends the run with exit code 1, after a line
``FAILED <doc>:<line>`` on stderr.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import subprocess
import sys
import time
import traceback
from typing import Any


def run_python(code: str, namespace: dict[str, Any], name: str) -> None:
    compiled = compile(code, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if compiled.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(compiled, namespace))  # noqa: S307 - our own docs
    else:
        exec(compiled, namespace)  # noqa: S102


def main(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        job = json.load(fh)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for block in job["blocks"]:
        where = f"{job['doc']}:{block['line']}"
        print(f"--- {where} ({block['language']})", flush=True)
        started = time.perf_counter()
        try:
            if block["language"] == "python":
                run_python(block["code"], namespace, where)
            else:
                subprocess.run(["bash", "-euo", "pipefail", "-c", block["code"]], check=True,
                               timeout=job["timeout"])
        except BaseException:  # noqa: BLE001 - report which block, then fail
            traceback.print_exc()
            print(f"FAILED {where}", file=sys.stderr, flush=True)
            return 1
        print(f"--- {where} took {time.perf_counter() - started:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
