"""GBNF grammars for constrained output: JSON Schema -> GBNF, and a parse check.

Both sides use this module. The daemon converts a request's JSON Schema (or ``"json"``) to GBNF
with llama-cpp-python's maintained converter (``llama_cpp.llama_grammar.json_schema_to_gbnf``)
and checks that a grammar parses before it submits anything: llama.cpp's own parser runs
without a model (``llama_sampler_init_grammar`` with no vocab), so a bad grammar is refused
with the request's other validation errors. The worker builds the grammar sampler with the
model's vocab, and answers a grammar that still fails (one spelling model tokens, ``<[id]>``
or ``<token>``, which only the vocab can resolve) with ``invalid_request``.
"""

from __future__ import annotations

import ctypes
import json
import threading
from typing import Any

GRAMMAR_ROOT = b"root"
_LOG_LOCK = threading.Lock()
# A JSON string character, as code point ranges. The converter's rule (``[^"\\]``) lets
# control characters through (invalid JSON: RFC 8259 wants them escaped), and any negated class
# also takes what llama.cpp's lenient UTF-8 decoder makes of invalid byte sequences (surrogates,
# "code points" past U+10FFFF from F5..FF lead bytes), which a byte-fallback vocab can spell
# with <0xXX> tokens: the text would then hold U+FFFD and break maxLength. Overlong encodings
# still decode to plain code points in llama.cpp, so those alone can slip through.
_JSON_CHAR_CLASS = r'[\x20-\x21\x23-\x5B\x5D-\x7E\x80-\uD7FF\uE000-\U0010FFFF]'
_LOOSE_CHARS = (r'[^"\\]', r'[^"\\\x7F\x00-\x1F]')


class GrammarError(ValueError):
    """A schema the converter refuses, or a grammar llama.cpp's parser refuses."""


def json_grammar() -> str:
    """The generic JSON grammar (llama.cpp's grammars/json.gbnf): any JSON object."""
    from llama_cpp.llama_grammar import JSON_GBNF

    return _strict_chars(str(JSON_GBNF))


def schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF for a JSON Schema; GrammarError naming what the converter refused."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        grammar = str(json_schema_to_gbnf(json.dumps(schema)))
    except RecursionError as exc:
        raise GrammarError("the schema nests too deeply") from exc
    except Exception as exc:  # noqa: BLE001 - the converter asserts; any failure is the schema's
        raise GrammarError(f"unsupported JSON Schema: {exc}") from exc
    return _strict_chars(grammar)


def _strict_chars(grammar: str) -> str:
    """``grammar`` with its string-character rule (``char ::=`` / ``string ::=``) strict."""
    lines = grammar.split("\n")
    for i, line in enumerate(lines):
        if line.lstrip().startswith(_LOOSE_CHARS) or line.startswith("char ::="):
            for loose in _LOOSE_CHARS:
                line = line.replace(loose, _JSON_CHAR_CLASS, 1)
            lines[i] = line
    return "\n".join(lines)


def grammar_problem(grammar: str, vocab: Any = None, lib: Any = None) -> str | None:
    """Why llama.cpp cannot use ``grammar`` (None when it parses).

    Without ``vocab`` (the daemon), a grammar that spells model tokens cannot be judged and
    passes: the worker checks it again with its vocab.
    """
    if lib is None:
        import llama_cpp as lib
    lines: list[str] = []
    data = grammar.encode("utf-8")
    if vocab is None:
        sampler = _with_log(lib, lines, lambda: lib.llama_sampler_init_grammar(None, data, GRAMMAR_ROOT))
    else:  # the worker: no log capture (the decode thread may be logging)
        sampler = lib.llama_sampler_init_grammar(vocab, data, GRAMMAR_ROOT)
    if sampler:
        lib.llama_sampler_free(sampler)
        return None
    if vocab is None and "<" in grammar:  # token references need the model's vocab
        return None
    reason = "; ".join(line.strip() for line in lines if line.strip()) or "failed to parse grammar"
    return f"llama.cpp refused the grammar: {reason}"


def _with_log(lib: Any, lines: list[str], call: Any) -> Any:
    """Run ``call`` with llama.cpp's error log lines collected into ``lines`` (daemon only)."""
    from llama_cpp import _logger

    @lib.llama_log_callback  # type: ignore[untyped-decorator]
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", errors="replace"))

    with _LOG_LOCK:
        lib.llama_log_set(collect, ctypes.c_void_p(0))
        try:
            return call()
        finally:
            lib.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
