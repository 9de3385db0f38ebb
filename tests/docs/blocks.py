"""Finding the runnable code blocks of a Markdown document (see test_doc_blocks.py for the rules)."""

from __future__ import annotations

import re
from dataclasses import dataclass

OPT_IN = "<!-- test-blocks -->"
SKIP = re.compile(r"^<!--\s*skip-test\b.*-->$")
LANGUAGES = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_DEFAULT_ADDRESS = re.compile(r"\b(?:localhost|127\.0\.0\.1):8910\b")


@dataclass(frozen=True)
class Block:
    language: str  # "python" or "bash"
    code: str
    line: int  # of the opening fence, 1-based
    skipped: bool


def extract(text: str) -> list[Block]:
    """Every fenced python/bash block in ``text``, in order, each marked if a skip marker precedes it.

    A skip marker is an HTML comment ``<!-- skip-test -->`` (a reason may follow: ``<!-- skip-test:
    needs a GPU -->``) on the last non-blank line before the fence. Blocks of other languages
    (json, http, toml, javascript, text, none) are documentation only and never run.
    """
    blocks: list[Block] = []
    lines = text.splitlines()
    previous = ""
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        fence, indent = match["fence"], len(match["indent"])
        language = LANGUAGES.get((match["info"].split() or [""])[0].lower())
        body: list[str] = []
        start = i
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i])
            i += 1
        i += 1  # the closing fence
        if language is not None:
            code = "\n".join(body) + "\n"
            blocks.append(Block(language, code, start + 1, bool(SKIP.match(previous))))
        previous = ""
    return blocks


def opted_in(text: str) -> bool:
    return OPT_IN in text


def to_daemon(code: str, endpoint: str) -> str:
    """Point the default address (``localhost:8910``, ``127.0.0.1:8910``) at the test's daemon."""
    host_port = endpoint.split("://", 1)[-1]
    return _DEFAULT_ADDRESS.sub(host_port, code)
