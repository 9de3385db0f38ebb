"""Tool calls in the text models really write, one format at a time.

The formats, each opened by a marker (``MARKERS``):

* Hermes / Qwen: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one call per tag
  (the closing tag may be missing at the end of the answer).
* Mistral: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`` (v0.3), or
  ``[TOOL_CALLS]name[ARGS]{...}`` (the 2025 templates), to the end of the answer.
* Llama 3.x: ``<|python_tag|>{"name": ..., "parameters": {...}}`` (calls separated by ``;``), or
  the whole answer a bare JSON call (3.2's and 3.3's JSON tool calling).
* Plain JSON: the whole answer a call object or a list of them, perhaps in a ```json fence;
  ``{"function": {"name", "arguments"}}`` (OpenAI's own shape) is taken too.

A call is only a call when its name is one of the request's tools and its arguments are a JSON
object (or a string holding one): anything else stays text, so junk never becomes a call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from llamahomed.service.tools.types import ToolCall


@dataclass(frozen=True)
class Marker:
    open: str
    close: str | None
    """The closing tag; None: the calls run to the end of the answer."""


HERMES = Marker("<tool_call>", "</tool_call>")
MISTRAL = Marker("[TOOL_CALLS]", None)
LLAMA3 = Marker("<|python_tag|>", None)
MARKERS: tuple[Marker, ...] = (HERMES, MISTRAL, LLAMA3)
_FENCE = re.compile(r"^```(?:json|JSON)?\s*\n?(.*?)\n?```\s*$", re.DOTALL)
_MISTRAL_ARGS = re.compile(r"\s*([a-zA-Z0-9_-]{1,64})\[ARGS\]")
_SEPARATORS = " \t\r\n;,"
_DECODER = json.JSONDecoder()


def call_from_object(value: Any, names: frozenset[str]) -> ToolCall | None:
    """A call from one decoded JSON value, or None when it is not a call of these tools."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict) and "name" not in value:
        value = value["function"]  # OpenAI's {"type": "function", "function": {...}}
    name = value.get("name")
    if not isinstance(name, str) or name not in names:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(name, arguments)


def calls_from_value(value: Any, names: frozenset[str]) -> list[ToolCall] | None:
    """Calls from a decoded object or list of objects; None unless every item is a call."""
    items = value if isinstance(value, list) else [value]
    calls = [call_from_object(item, names) for item in items]
    if not calls or any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def decode_values(text: str) -> tuple[list[Any], str]:
    """Successive JSON values at the start of ``text`` (separated by whitespace, ``;`` or
    ``,``), and what follows the last one."""
    values: list[Any] = []
    position = 0
    while True:
        while position < len(text) and text[position] in _SEPARATORS:
            position += 1
        if position >= len(text) or text[position] not in "{[":
            return values, text[position:]
        try:
            value, position = _DECODER.raw_decode(text, position)
        except (ValueError, RecursionError):
            return values, text[position:]
        values.append(value)


def calls_in_segment(body: str, names: frozenset[str]) -> list[ToolCall] | None:
    """The calls after a marker (up to its closing tag): JSON values, or Mistral's
    ``name[ARGS]{...}`` form. None when the segment holds anything that is not a call."""
    calls: list[ToolCall] = []
    rest = body
    while True:
        match = _MISTRAL_ARGS.match(rest)
        if not match:
            break
        values, rest = decode_values(rest[match.end():])
        if not values or not isinstance(values[0], dict) or match.group(1) not in names:
            return None
        calls.append(ToolCall(match.group(1), values[0]))
        if len(values) > 1:
            return None
        rest = rest.lstrip(_SEPARATORS)
        if rest.startswith(MISTRAL.open):
            rest = rest[len(MISTRAL.open):]
    if calls:
        return calls if not rest.strip() else None
    values, rest = decode_values(body)
    if not values or rest.strip():
        return None
    found: list[ToolCall] = []
    for value in values:
        more = calls_from_value(value, names)
        if more is None:
            return None
        found.extend(more)
    return found


def whole_json_calls(text: str, names: frozenset[str]) -> list[ToolCall] | None:
    """The calls when the whole answer is JSON calls (plain JSON, Llama 3.x, in a fence or
    not); None otherwise."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    if not stripped.startswith(("{", "[")):
        return None
    return calls_in_segment(stripped, names)


def may_open_whole_json(text: str) -> bool:
    """Whether an answer beginning with ``text`` (stripped) may be a whole-answer JSON call."""
    return text.startswith(("{", "[", "`"))


def partial_marker(text: str) -> int:
    """How many trailing characters of ``text`` could be the start of a marker."""
    longest = 0
    for marker in MARKERS:
        for size in range(min(len(marker.open) - 1, len(text)), longest, -1):
            if text.endswith(marker.open[:size]):
                longest = size
                break
    return longest


def find_marker(text: str) -> tuple[int, Marker] | None:
    """The first whole marker in ``text`` and where it starts."""
    found = [(text.find(m.open), m) for m in MARKERS if m.open in text]
    return min(found, key=lambda pair: pair[0]) if found else None
