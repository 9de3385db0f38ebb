"""GBNF that forces an answer to be tool calls (``tool_choice`` ``required`` or a named function).

Each callable tool becomes a JSON Schema ``{"name": <const>, "arguments": <its parameters>}``;
``anyOf`` over them goes through the engine's JSON Schema -> GBNF converter
(:func:`llamahomed.engine.grammar.schema_grammar`), so the arguments validate against the
function's schema as far as the converter can express it (types, required properties, enums,
nesting; not numeric bounds). The converter's ``root`` becomes ``tc-body`` and a new ``root``
wraps it in the call syntax the model's template speaks (``SYNTAXES``): one call, or 1 to
``ToolSet.max_calls`` calls when parallel calls are allowed. Once the last call is closed the
grammar only lets the model end its answer.
"""

from __future__ import annotations

from typing import Any, Literal

from llamahomed.engine.grammar import schema_grammar
from llamahomed.service.tools.types import Tool, ToolSet

Syntax = Literal["hermes", "mistral", "llama3"]
BODY_RULE = "tc-body"

# syntax -> (before the calls, between calls, after the calls, arguments key)
SYNTAXES: dict[str, tuple[str, str, str, str]] = {
    "hermes": ("<tool_call>\n", "\n</tool_call>\n<tool_call>\n", "\n</tool_call>", "arguments"),
    "mistral": ("[TOOL_CALLS][", ", ", "]", "arguments"),
    "llama3": ("", "; ", "", "parameters"),
}


def call_schema(tool: Tool, key: str = "arguments") -> dict[str, Any]:
    """The JSON Schema of one call of ``tool``."""
    return {"type": "object",
            "properties": {"name": {"const": tool.name}, key: tool.parameters},
            "required": ["name", key], "additionalProperties": False}


def body_grammar(tools: tuple[Tool, ...], key: str = "arguments") -> str:
    """GBNF whose rule ``tc-body`` is one call of any of ``tools`` (GrammarError when the
    converter refuses a schema)."""
    schemas = [call_schema(tool, key) for tool in tools]
    grammar = schema_grammar(schemas[0] if len(schemas) == 1 else {"anyOf": schemas})
    return _rename_root(grammar)


def call_grammar(tools: ToolSet, syntax: Syntax = "hermes") -> str:
    """The grammar of a forced answer: ``tools.max_calls`` calls at most, at least one."""
    opening, between, closing, key = SYNTAXES[syntax]
    more = tools.max_calls - 1
    repeat = f" ( {_literal(between)} {BODY_RULE} ){{0,{more}}}" if more > 0 else ""
    root = f"root ::= {_literal(opening)} {BODY_RULE}{repeat} {_literal(closing)}"
    return root + "\n" + body_grammar(tools.callable_tools(), key)


def _literal(text: str) -> str:
    if not text:
        return '""'
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _rename_root(grammar: str) -> str:
    """``grammar`` with its rule ``root`` called ``tc-body`` (definition and references;
    quoted literals and character classes left alone)."""
    lines = []
    for line in grammar.split("\n"):
        name, sep, rule = line.partition(" ::= ")
        if not sep:
            lines.append(line)
            continue
        if name == "root":
            name = BODY_RULE
        lines.append(f"{name} ::= {_rename_in_rule(rule)}")
    return "\n".join(lines)


def _rename_in_rule(rule: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(rule):
        ch = rule[i]
        if ch in "\"[":
            end = _skip(rule, i, '"' if ch == '"' else "]")
            out.append(rule[i:end])
            i = end
            continue
        if ch.isalnum() or ch == "-" or ch == "_":
            j = i
            while j < len(rule) and (rule[j].isalnum() or rule[j] in "-_"):
                j += 1
            word = rule[i:j]
            out.append(BODY_RULE if word == "root" else word)
            i = j
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _skip(rule: str, start: int, close: str) -> int:
    """The index after the literal or class opening at ``start`` (backslash escapes skipped)."""
    i = start + 1
    while i < len(rule):
        if rule[i] == "\\":
            i += 2
            continue
        if rule[i] == close:
            return i + 1
        i += 1
    return len(rule)
