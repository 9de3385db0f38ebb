"""The incremental parser streams content at once, holds back only what may be a call, and
splits any chunking of an answer exactly as the whole answer splits."""

from __future__ import annotations

import random

import pytest

from llamahomed.service.tools import Call, Content, Piece, ToolStream, parse_text

NAMES = {"get_weather", "add"}
ANSWERS = [
    "Plain answer with <b>tags</b> and [brackets].",
    'Sure! <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>\n<tool_call>'
    '{"name": "add", "arguments": {"a": 2}}</tool_call>',
    '[TOOL_CALLS][{"name": "add", "arguments": {"a": 1}}]',
    '{"name": "add", "parameters": {"a": 7}}',
    '{"not": "a call"} but text',
    '<tool_call>{"name": "nope", "arguments": {}}</tool_call> after',
    "ends with a partial marker <tool_ca",
]


def run(stream: ToolStream, chunks: list[str]) -> list[Piece]:
    pieces: list[Piece] = []
    for chunk in chunks:
        pieces += stream.feed(chunk)
    return pieces + stream.finish()


@pytest.mark.parametrize("answer", ANSWERS)
def test_every_chunking_splits_like_the_whole_answer(answer: str) -> None:
    whole = parse_text(answer, NAMES)
    rng = random.Random(answer)
    for trial in range(20):
        cuts = sorted(rng.sample(range(1, len(answer)), k=min(len(answer) - 1, trial % 7 + 1)))
        chunks = [answer[a:b] for a, b in zip([0, *cuts], [*cuts, len(answer)])]
        pieces = run(ToolStream(NAMES), chunks)
        assert "".join(p.text for p in pieces if isinstance(p, Content)) == whole.content
        calls = [p.call for p in pieces if isinstance(p, Call)]
        assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in whole.calls]
        assert [p.index for p in pieces if isinstance(p, Call)] == list(range(len(calls)))


def test_plain_text_streams_at_once_and_only_a_possible_marker_is_held() -> None:
    stream = ToolStream(NAMES)
    assert stream.feed("Hello") == [Content("Hello")]
    assert stream.feed(" world <tool") == [Content(" world")]  # "<tool" may open a call
    assert stream.feed("kit>") == [Content(" <toolkit>")]      # it did not
    assert stream.feed(" [TOOL_") == []                         # the space waits for what follows
    assert stream.feed("CALLS]") == []                          # a Mistral call opened
    assert stream.finish() == [Content(" [TOOL_CALLS]")]        # ... with nothing in it


def test_a_hermes_call_comes_out_at_its_closing_tag_before_the_answer_ends() -> None:
    stream = ToolStream(NAMES)
    assert stream.feed("<tool_call>\n") == []
    assert stream.feed('{"name": "add", "arguments": {"a": 1}}\n</tool') == []
    (piece,) = stream.feed("_call>")
    assert isinstance(piece, Call) and piece.index == 0 and piece.call.arguments == {"a": 1}
    assert stream.feed("\n") == []       # whitespace between calls is not content
    assert stream.finish() == []
    assert [c.name for c in stream.calls] == ["add"]


def test_an_answer_opening_like_json_is_judged_at_the_end() -> None:
    stream = ToolStream(NAMES)
    assert stream.feed('  {"name": "add",') == []
    assert stream.feed(' "arguments": {}}') == []
    (piece,) = stream.finish()
    assert isinstance(piece, Call) and piece.call.name == "add"
    other = ToolStream(NAMES)
    assert other.feed('{"x": 1}') == []
    assert other.finish() == [Content('{"x": 1}')]
