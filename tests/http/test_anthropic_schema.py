"""Anthropic's request bodies as the daemon reads them: content blocks and tool turns become
chat-template messages, tools and tool_choice the neutral words of the tool machinery."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from llamahomed.core.errors import InvalidRequest
from llamahomed.http.handlers.anthropic_schema import (
    MessagesRequest,
    template_messages,
    tool_request,
    tool_use_id,
)
from llamahomed.service.chat_template import ChatTemplate

WEATHER = {"name": "get_weather", "description": "Today's weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


def body(messages: list[dict[str, Any]], **extra: Any) -> MessagesRequest:
    return MessagesRequest.model_validate({"model": "m", "max_tokens": 8, "messages": messages,
                                           **extra})


def test_system_blocks_and_text_blocks_become_plain_messages() -> None:
    request = body([{"role": "user", "content": [{"type": "text", "text": "one"},
                                                 {"type": "text", "text": "two"}]}],
                   system=[{"type": "text", "text": "be brief"},
                           {"type": "text", "text": "be kind", "cache_control": {"type": "ephemeral"}}])
    assert request.template_messages() == [{"role": "system", "content": "be brief\n\nbe kind"},
                                           {"role": "user", "content": "one\n\ntwo"}]


def test_a_tool_round_trip_becomes_tool_calls_and_tool_messages() -> None:
    request = body([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "...", "signature": "x"},
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "no clock"}]},
            {"type": "text", "text": "And tomorrow?"}]},
    ])
    assert request.template_messages() == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": {}}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "name": "get_weather", "content": "18C, sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "name": "get_time", "content": "Error: no clock"},
        {"role": "user", "content": "And tomorrow?"},
    ]


def test_a_user_turn_of_only_tool_results_adds_no_empty_user_message() -> None:
    messages = template_messages(None, body([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
    ]).messages)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[-1]["content"] == ""
    assert messages[1]["content"] == ""


def test_a_final_assistant_turn_is_the_prefill_the_answer_continues() -> None:
    request = body([{"role": "user", "content": "Give JSON."},
                    {"role": "assistant", "content": [{"type": "text", "text": '{"a":'},
                                                      {"type": "text", "text": " 1"}]}])
    assert request.template_messages() == [{"role": "user", "content": "Give JSON."}]
    assert request.prefill() == '{"a": 1'
    assert body([{"role": "user", "content": "q"}]).prefill() == ""


def test_consecutive_turns_of_one_role_are_joined() -> None:
    messages = body([{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                     {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}]
                    ).template_messages()
    assert messages == [{"role": "user", "content": "a\n\nb"},
                        {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}]


def test_the_history_renders_through_a_chat_template_that_knows_tools() -> None:
    template = ChatTemplate(
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}"
        "{% for c in m.tool_calls or [] %}<call {{ c.id }} {{ c.function.name }} "
        "{{ c.function.arguments | tojson }}>{% endfor %}"
        "{% if m.role == 'tool' %}({{ m.tool_call_id }}){% endif %}{% endfor %}")
    messages = body([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "f",
                                           "input": {"x": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9",
                                      "content": "done"}]},
    ]).template_messages()
    assert template.render(messages, add_generation_prompt=False) == (
        '[user]go[assistant]<call toolu_9 f {"x": 1}>[tool]done(toolu_9)')


@pytest.mark.parametrize(("messages", "words"), [
    ([{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}],
     "messages.0.content.0: image blocks are not supported"),
    ([{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}],
     "tool_use blocks come in assistant messages"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "tool_result", "tool_use_id": "t"}]}, {"role": "user", "content": "q"}],
     "tool_result blocks come in user messages"),
    ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "image", "source": {}}]}]}], "image blocks are not supported"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "Sure, "}],
     "cannot end with whitespace"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}],
     "messages.1.content.0: a final assistant message is a prefill: text blocks only"),
])
def test_what_cannot_be_rendered_is_refused_with_its_place(messages: list[dict[str, Any]],
                                                           words: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        body(messages).template_messages()
    assert words in refused.value.message


@pytest.mark.parametrize("bad", [
    {"messages": []},
    {"messages": [{"role": "system", "content": "x"}]},
    {"messages": [{"role": "user", "content": [{"type": "bogus"}]}]},
    {"max_tokens": 0},
    {"temperature": 1.01},
    {"top_k": -1},
    {"tool_choice": {"type": "tool"}},
    {"tool_choice": {"type": "auto", "name": "f"}},
    {"tools": [{"name": "has space", "input_schema": {}}]},
    {"tools": [{"type": "bash_20250124", "name": "bash"}]},
])
def test_invalid_bodies_are_refused(bad: dict[str, Any]) -> None:
    data = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "q"}], **bad}
    with pytest.raises(ValidationError):
        MessagesRequest.model_validate(data)


def test_tools_and_tool_choice_in_the_neutral_words() -> None:
    assert tool_request(body([{"role": "user", "content": "q"}])) is None
    plain = tool_request(body([{"role": "user", "content": "q"}], tools=[WEATHER]))
    assert plain == {"tools": [{"name": "get_weather", "description": "Today's weather in a city",
                                "parameters": WEATHER["input_schema"]}],
                     "choice": {"mode": "auto", "name": None}, "parallel": True}
    choices = {"any": ("required", None), "auto": ("auto", None)}
    for kind, (mode, name) in choices.items():
        asked = tool_request(body([{"role": "user", "content": "q"}], tools=[WEATHER],
                                  tool_choice={"type": kind, "disable_parallel_tool_use": True}))
        assert asked is not None
        assert asked["choice"] == {"mode": mode, "name": name} and asked["parallel"] is False
    named = tool_request(body([{"role": "user", "content": "q"}], tools=[WEATHER],
                              tool_choice={"type": "tool", "name": "get_weather"}))
    assert named is not None and named["choice"] == {"mode": "named", "name": "get_weather"}
    assert tool_request(body([{"role": "user", "content": "q"}], tools=[WEATHER],
                             tool_choice={"type": "none"})) is None


def test_tool_choice_must_name_a_given_tool() -> None:
    with pytest.raises(InvalidRequest, match="no tool is named 'other'"):
        tool_request(body([{"role": "user", "content": "q"}], tools=[WEATHER],
                          tool_choice={"type": "tool", "name": "other"}))
    with pytest.raises(InvalidRequest, match="needs tools"):
        tool_request(body([{"role": "user", "content": "q"}], tool_choice={"type": "any"}))


def test_tool_use_ids_look_like_anthropics() -> None:
    first, second = tool_use_id(), tool_use_id()
    assert first.startswith("toolu_") and len(first) == 30 and first != second
