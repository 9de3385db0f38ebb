"""Tool calls are found in every format models really write, and junk never becomes a call."""

from __future__ import annotations

import pytest

from llamahomed.service.tools import parse_text

NAMES = {"get_weather", "add"}


@pytest.mark.parametrize(("text", "expected"), [
    # Hermes / Qwen, one call per tag, the closing tag optional at the end
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
     [("get_weather", {"city": "Paris"})]),
    ('<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>\n'
     '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>',
     [("add", {"a": 1}), ("get_weather", {"city": "Oslo"})]),
    ('<tool_call>\n{"name": "add", "arguments": {"a": 2}}', [("add", {"a": 2})]),
    ('<tool_call>{"name": "add", "arguments": {"a": 2}}</tool_', [("add", {"a": 2})]),
    # arguments given as a JSON string, and OpenAI's own call shape
    ('<tool_call>{"name": "add", "arguments": "{\\"a\\": 3}"}</tool_call>', [("add", {"a": 3})]),
    ('<tool_call>{"type": "function", "function": {"name": "add", "arguments": {"a": 4}}}'
     '</tool_call>', [("add", {"a": 4})]),
    # Mistral, v0.3 list and the [ARGS] form
    ('[TOOL_CALLS][{"name": "add", "arguments": {"a": 1}}, {"name": "get_weather", '
     '"arguments": {"city": "Rome"}}]', [("add", {"a": 1}), ("get_weather", {"city": "Rome"})]),
    ('[TOOL_CALLS]add[ARGS]{"a": 5}', [("add", {"a": 5})]),
    ('[TOOL_CALLS]add[ARGS]{"a": 5}[TOOL_CALLS]get_weather[ARGS]{}',
     [("add", {"a": 5}), ("get_weather", {})]),
    # Llama 3.x: python_tag with ; between calls, or the whole answer a JSON call
    ('<|python_tag|>{"name": "add", "parameters": {"a": 6}}; {"name": "get_weather", '
     '"parameters": {"city": "Lima"}}', [("add", {"a": 6}), ("get_weather", {"city": "Lima"})]),
    ('{"name": "add", "parameters": {"a": 7}}', [("add", {"a": 7})]),
    ('{"type": "function", "name": "add", "parameters": {"a": 8}}', [("add", {"a": 8})]),
    # plain JSON, bare or fenced, one call or a list
    ('  [{"name": "add", "arguments": {"a": 9}}]  ', [("add", {"a": 9})]),
    ('```json\n{"name": "get_weather", "arguments": {"city": "Nice"}}\n```',
     [("get_weather", {"city": "Nice"})]),
])
def test_each_format_gives_the_calls_and_no_content(text: str, expected: list[tuple[str, dict]]) -> None:
    parsed = parse_text(text, NAMES)
    assert [(c.name, c.arguments) for c in parsed.calls] == expected
    assert parsed.content == ""
    assert len({c.id for c in parsed.calls}) == len(expected)
    assert all(c.id.startswith("call_") for c in parsed.calls)


@pytest.mark.parametrize("text", [
    "Hello! The weather is fine.",
    '{"a": 1} is a JSON object, not a call',
    '{"name": "unknown_tool", "arguments": {}}',              # not one of the tools
    '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',
    '<tool_call>{"name": "add", "arguments": [1, 2]}</tool_call>',  # arguments not an object
    '<tool_call>{"name": "add", "arguments": "not json"}</tool_call>',
    '<tool_call>{"name": "add", "argu',                       # cut off mid-call
    "<tool_call>not json at all</tool_call>",
    '[TOOL_CALLS]nope[ARGS]{"a": 1}',
    "a < b and [TOOL is not a marker <tool",
    '```python\nprint("hi")\n```',
    " leading and trailing whitespace  ",
])
def test_junk_stays_content_exactly_as_written(text: str) -> None:
    parsed = parse_text(text, NAMES)
    assert parsed.calls == ()
    assert parsed.content == text


def test_text_around_calls_is_kept_as_content() -> None:
    parsed = parse_text('Let me check. <tool_call>{"name": "add", "arguments": {"a": 1}}'
                        '</tool_call>\n Done.', NAMES)
    assert [c.name for c in parsed.calls] == ["add"]
    assert parsed.content == "Let me check.\n Done."


def test_a_bad_call_between_good_ones_is_kept_as_text() -> None:
    parsed = parse_text('<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>'
                        "<tool_call>{broken}</tool_call>", NAMES)
    assert [c.arguments for c in parsed.calls] == [{"a": 1}]
    assert parsed.content == "<tool_call>{broken}</tool_call>"
