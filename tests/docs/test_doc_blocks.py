"""Every ``python`` and ``bash`` block of the guides runs against a real daemon, so the docs cannot rot.

Which documents: the API guide's Next Steps (docs/Examples.md, Integration.md, Security.md,
Monitoring.md) whenever they exist, and any other docs/*.md that contains the line
``<!-- test-blocks -->``.

How a document's blocks run (write docs for a user's machine; they then just work here):

- One ``llamahomed start`` process for this module, with a home directory of its own
  (``HOME``, no ``LLAMAHOME_*`` variables): the admin token is in
  ``~/.local/state/llamahome/admin.token``, the config in ``~/.config/llamahome/config.toml``,
  the models in ``~/.local/share/llamahome/models`` (the tiny test model ``tiny-llama``, the
  default, Gemma 3 270M as ``gemma3-270m`` where real text matters, and SmolLM2 135M Instruct,
  the default chat model, as ``smollm2-135m-instruct``). ``APIClient()`` and the
  ``llamahomed`` commands find it by themselves.
- The default address ``localhost:8910`` / ``127.0.0.1:8910`` in a block is replaced by the test
  daemon's. ``LLAMAHOME_ENDPOINT`` (alias ``LLAMAHOME_URL``) and ``LLAMAHOME_API_KEY`` are also set,
  for blocks that prefer ``$LLAMAHOME_ENDPOINT`` and ``$LLAMAHOME_API_KEY``.
- Blocks run in document order, each document in a fresh process and working directory. Python
  blocks share one namespace (what one defines, the next can use) and may use top-level
  ``await``; bash blocks run with ``bash -euo pipefail``; ``python`` is the test's interpreter.
- ``<!-- skip-test -->`` (optionally ``<!-- skip-test: why -->``) on the line before a block keeps
  it from running: for blocks that cannot run here (``llamahomed start`` in the foreground,
  systemd, another machine).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.docs.blocks import extract, opted_in, to_daemon
from tests.fixtures.daemon import RunningDaemon, home_env, start_daemon
from tests.fixtures.tiny_gguf import write_tiny_llama

pytestmark = pytest.mark.e2e

DOCS = ROOT / "docs"
NEXT_STEPS = ("Examples.md", "Integration.md", "Security.md", "Monitoring.md")
RUNNER = Path(__file__).with_name("run_blocks.py")
DOC_TIMEOUT = 300


def documents() -> list[Path]:
    found = [DOCS / name for name in NEXT_STEPS if (DOCS / name).exists()]
    found += [p for p in sorted(DOCS.glob("*.md"))
              if p.name not in NEXT_STEPS and opted_in(p.read_text(encoding="utf-8"))]
    return found


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, gemma_file: Path,
           smollm2_file: Path) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("docs")
    home = root / "home"
    store = home / ".local" / "share" / "llamahome" / "models"
    store.mkdir(parents=True)
    write_tiny_llama(store / "tiny-llama.gguf", n_ctx=2048)
    os.link(gemma_file, store / gemma_file.name)
    os.link(smollm2_file, store / smollm2_file.name)  # the default chat model
    config = home / ".config" / "llamahome" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[model_settings]\ndefault_model = "tiny-llama"\n')
    with start_daemon(root, home_env(home)) as running:
        yield running


@pytest.mark.parametrize("doc", documents(), ids=lambda p: p.name)
def test_every_block_of_the_document_runs(doc: Path, daemon: RunningDaemon, tmp_path: Path) -> None:
    blocks = [b for b in extract(doc.read_text(encoding="utf-8")) if not b.skipped]
    if not blocks:
        pytest.skip(f"{doc.name} has no runnable blocks")
    job = {"doc": str(doc.relative_to(ROOT)), "timeout": DOC_TIMEOUT, "blocks": [
        {"language": b.language, "line": b.line, "code": to_daemon(b.code, daemon.endpoint)}
        for b in blocks]}
    job_file = tmp_path / "blocks.json"
    job_file.write_text(json.dumps(job))
    # the admin token as it is now: Security.md rotates the secret (renewing the token file)
    daemon.token = (daemon.state_dir / "admin.token").read_text().strip()
    env = {**daemon.env, **daemon.client_env(),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = subprocess.run([sys.executable, str(RUNNER), str(job_file)], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=DOC_TIMEOUT, check=False)
    assert result.returncode == 0, (
        f"{result.stderr[-6000:]}\n--- stdout ---\n{result.stdout[-3000:]}\n"
        f"--- daemon ---\n{daemon.output()[-2000:]}")
    # one "--- <doc>:<line> took N s" line per block (a block's own output may say "took" too)
    finished = re.findall(r"--- \S+:\d+ took [\d.]+ s$", result.stdout, re.MULTILINE)
    assert len(finished) == len(blocks), result.stdout[-3000:]
    print(result.stdout)  # with -s: each block's output and time


def test_the_guides_next_steps_documents_of_this_area_exist_with_blocks() -> None:
    for name in ("Examples.md", "Integration.md"):
        blocks = extract((DOCS / name).read_text(encoding="utf-8"))
        assert {b.language for b in blocks if not b.skipped} == {"python", "bash"}, name
