"""OpenAI expectations for ``tools`` / ``tool_choice``, ``logprobs`` / ``top_logprobs`` and
``n > 1``.

Peers: vLLM (tests/entrypoints/openai: test_completion_with_function_calling,
test_tool_choice_null, test_chat logprobs cases, test_completion logprobs, n / best_of cases),
llama.cpp (tools/server/tests/unit: test_tool_call, test_chat_completion ``test_logprobs``,
``test_chat_completions_multiple_choices``, test_completion ``test_n_probs``), Ollama
(openai/openai_test.go 'chat handler with tools', 'tool response with call ID').
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import openai
import pytest

from tests.http.openai_compat.conftest import CHAT, TINY
from tests.http.openai_compat.wire import error, ok, sse

CHAT_PATH, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                    "unit": {"enum": ["c", "f"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["utc", "cet"]}}, "required": ["zone"]}}}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
SAMPLE = {"temperature": 1.0, "top_k": 0, "min_p": 0.0, "max_tokens": 200, "seed": 7}



def chat(**body: Any) -> dict[str, Any]:
    return {"model": CHAT, "messages": MESSAGES, **body}


def check_call(call: dict[str, Any], name: str = "get_weather") -> dict[str, Any]:
    assert call["type"] == "function" and isinstance(call["id"], str) and call["id"]
    assert call["function"]["name"] == name
    arguments: dict[str, Any] = json.loads(call["function"]["arguments"])
    assert isinstance(arguments, dict)
    return arguments


# -- tools --------------------------------------------------------------------------------------

def test_a_named_tool_choice_returns_that_call(http: httpx.Client) -> None:
    """vLLM test_completion_with_function_calling (named function), llama.cpp test_tool_call:
    the message carries ``tool_calls`` whose arguments follow the function's parameters."""
    data = ok(http, CHAT_PATH, chat(tools=[WEATHER, TIME], tool_choice=NAMED, **SAMPLE))
    message = data["choices"][0]["message"]
    (call,) = message["tool_calls"]
    arguments = check_call(call)
    assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("c", "f")
    assert message["content"] in (None, "")
    assert data["choices"][0]["finish_reason"] in ("tool_calls", "stop")


def test_tool_choice_required_calls_a_tool_and_finishes_with_tool_calls(http: httpx.Client) -> None:
    """vLLM 'required' tool choice: at least one call; finish_reason 'tool_calls' (OpenAI)."""
    data = ok(http, CHAT_PATH, chat(tools=[WEATHER, TIME], tool_choice="required", **SAMPLE))
    calls = data["choices"][0]["message"]["tool_calls"]
    assert calls and all(c["function"]["name"] in ("get_weather", "get_time") for c in calls)
    for call in calls:
        check_call(call, call["function"]["name"])
    assert data["choices"][0]["finish_reason"] == "tool_calls"


def test_a_streamed_tool_call_arrives_as_indexed_deltas(http: httpx.Client) -> None:
    """vLLM test_completion_with_function_calling (streaming): the first tool-call delta names
    the id and function; argument fragments join to JSON."""
    chunks, payloads = sse(http, CHAT_PATH, chat(tools=[WEATHER], tool_choice=NAMED, **SAMPLE))
    deltas = [d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get(
        "tool_calls") or []]
    assert deltas and all(d["index"] == 0 for d in deltas)
    assert deltas[0]["id"] and deltas[0]["function"]["name"] == "get_weather"
    arguments = "".join(d["function"].get("arguments") or "" for d in deltas)
    assert set(json.loads(arguments)) == {"city", "unit"}
    assert payloads[-1] == "[DONE]"


def test_the_sdk_reads_tool_calls(sdk: openai.OpenAI) -> None:
    """llama.cpp test_tool_call through the OpenAI library: parsed ``tool_calls`` objects."""
    reply = sdk.chat.completions.create(model=CHAT, messages=MESSAGES,  # type: ignore[arg-type]
                                        tools=[WEATHER], tool_choice=NAMED,  # type: ignore[list-item,arg-type]
                                        max_tokens=200, seed=7)
    calls = reply.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    json.loads(calls[0].function.arguments)  # type: ignore[union-attr]


def test_tool_choice_none_answers_in_text(http: httpx.Client) -> None:
    """OpenAI / vLLM test_tool_choice_null: with tool_choice 'none' the model answers in text
    even though tools are given."""
    data = ok(http, CHAT_PATH, chat(tools=[WEATHER], tool_choice="none", max_tokens=4))
    message = data["choices"][0]["message"]
    assert not message.get("tool_calls") and isinstance(message["content"], str)


def test_parallel_tool_calls_false_is_accepted(http: httpx.Client) -> None:
    """OpenAI's ``parallel_tool_calls``: false limits the answer to at most one call."""
    data = ok(http, CHAT_PATH, chat(tools=[WEATHER, TIME], tool_choice="required",
                                    parallel_tool_calls=False, **SAMPLE))
    assert len(data["choices"][0]["message"]["tool_calls"]) == 1


def test_a_tool_choice_naming_an_unknown_function_is_a_400(http: httpx.Client) -> None:
    """vLLM: a named tool_choice must name one of ``tools`` (400 naming tool_choice)."""
    found = error(http, CHAT_PATH, chat(tools=[WEATHER], tool_choice={
        "type": "function", "function": {"name": "nope"}}))
    assert found["param"] == "tool_choice"


@pytest.mark.parametrize("tools", [[{"type": "retrieval"}], [{"type": "function"}],
                                   [{"type": "function", "function": {"description": "x"}}]])
def test_a_malformed_tool_is_a_400_naming_tools(http: httpx.Client, tools: Any) -> None:
    """vLLM test_chat_error (bad tool definitions) / OpenAI: 400 with param 'tools'."""
    assert error(http, CHAT_PATH, chat(tools=tools, max_tokens=2))["param"].startswith("tools")


def test_a_required_tool_choice_without_tools_is_a_400(http: httpx.Client) -> None:
    """OpenAI: tool_choice needs tools."""
    error(http, CHAT_PATH, chat(tool_choice="required", max_tokens=2))


@pytest.mark.parametrize("choice", [None, "none", "auto"])
def test_tool_choice_without_tools_is_harmless(http: httpx.Client, choice: str | None) -> None:
    """vLLM test_tool_choice_null: null / none / auto without tools is a plain chat."""
    ok(http, CHAT_PATH, chat(tool_choice=choice, max_tokens=2))


def test_a_history_with_tool_calls_and_results_is_accepted(http: httpx.Client) -> None:
    """Ollama 'tool response with call ID' / 'with name': an assistant turn that called a tool
    and the tool's answer (``tool_call_id``) are valid history."""
    history = [*MESSAGES,
               {"role": "assistant", "content": None, "tool_calls": [{
                   "id": "call_1", "type": "function",
                   "function": {"name": "get_weather",
                                "arguments": "{\"city\": \"Paris\", \"unit\": \"c\"}"}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "20 degrees"}]
    ok(http, CHAT_PATH, {"model": CHAT, "messages": history, "max_tokens": 2})


# -- logprobs -----------------------------------------------------------------------------------

def check_top(entry: dict[str, Any], k: int) -> None:
    assert isinstance(entry["token"], str) and entry["logprob"] <= 0.0
    assert isinstance(entry["bytes"], list)
    tops = entry["top_logprobs"]
    assert len(tops) == k
    values = [t["logprob"] for t in tops]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("k", [0, 1, 5])
def test_chat_logprobs_has_one_entry_per_token_with_k_alternatives(http: httpx.Client,
                                                                  k: int) -> None:
    """vLLM test_zero_logprobs_chat / test_some_logprobs_chat, llama.cpp test_logprobs."""
    data = ok(http, CHAT_PATH, chat(logprobs=True, top_logprobs=k, max_tokens=5, temperature=0))
    content = data["choices"][0]["logprobs"]["content"]
    assert len(content) == data["usage"]["completion_tokens"] == 5
    for entry in content:
        check_top(entry, k)
    assert "".join(e["token"] for e in content) == data["choices"][0]["message"]["content"]


def test_greedy_picks_the_most_likely_token(http: httpx.Client) -> None:
    """llama.cpp test_logprobs: at temperature 0 the chosen token tops its alternatives."""
    data = ok(http, CHAT_PATH, chat(logprobs=True, top_logprobs=3, max_tokens=5, temperature=0))
    for entry in data["choices"][0]["logprobs"]["content"]:
        best = entry["top_logprobs"][0]
        assert best["token"] == entry["token"]
        assert math.isclose(best["logprob"], entry["logprob"], abs_tol=1e-4)


def test_streamed_chat_chunks_carry_their_logprobs(http: httpx.Client) -> None:
    """llama.cpp test_logprobs_stream: each content chunk has ``logprobs.content``."""
    chunks, _ = sse(http, CHAT_PATH, chat(logprobs=True, top_logprobs=2, max_tokens=5,
                                          temperature=0))
    entries = [e for c in chunks if c["choices"] and c["choices"][0].get("logprobs")
               for e in c["choices"][0]["logprobs"]["content"]]
    assert len(entries) == 5


def test_completion_logprobs_lists_tokens_offsets_and_alternatives(http: httpx.Client) -> None:
    """vLLM test_completion (logprobs=k), llama.cpp test_n_probs: tokens, token_logprobs,
    top_logprobs (k each) and text_offset, one per generated token."""
    data = ok(http, COMPLETIONS, {"model": TINY, "prompt": "the cat", "max_tokens": 5,
                                  "temperature": 0, "logprobs": 3})
    logprobs = data["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == 5
    assert len(logprobs["text_offset"]) == 5 and len(logprobs["top_logprobs"]) == 5
    assert all(len(top) <= 3 for top in logprobs["top_logprobs"])
    assert "".join(logprobs["tokens"]) == data["choices"][0]["text"]


def test_too_many_top_logprobs_is_a_400(http: httpx.Client) -> None:
    """vLLM test_too_many_chat_logprobs: OpenAI allows at most 20 (400 naming top_logprobs)."""
    found = error(http, CHAT_PATH, chat(logprobs=True, top_logprobs=21, max_tokens=2))
    assert found["param"] == "top_logprobs"


def test_the_sdk_reads_logprobs(sdk: openai.OpenAI) -> None:
    """The OpenAI library parses ``choice.logprobs.content``."""
    reply = sdk.chat.completions.create(model=CHAT, messages=MESSAGES,  # type: ignore[arg-type]
                                        logprobs=True, top_logprobs=2, max_tokens=3)
    assert reply.choices[0].logprobs is not None
    assert len(reply.choices[0].logprobs.content or []) == 3


def test_logprobs_false_leaves_logprobs_null(http: httpx.Client) -> None:
    """vLLM test_no_logprobs_chat: logprobs=false means ``choice.logprobs`` is null."""
    data = ok(http, CHAT_PATH, chat(logprobs=False, max_tokens=2))
    assert data["choices"][0]["logprobs"] is None


# -- n > 1 --------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3])
def test_n_choices_are_indexed_and_counted(http: httpx.Client, n: int) -> None:
    """llama.cpp test_chat_completions_multiple_choices, vLLM n>1: n choices, indices 0..n-1,
    usage counts every choice's tokens."""
    data = ok(http, CHAT_PATH, chat(n=n, max_tokens=4, temperature=1.0, seed=1))
    assert [c["index"] for c in data["choices"]] == list(range(n))
    assert data["usage"]["completion_tokens"] == 4 * n


def test_greedy_n_choices_agree(http: httpx.Client) -> None:
    """At temperature 0 every choice is the greedy text."""
    data = ok(http, CHAT_PATH, chat(n=3, max_tokens=5, temperature=0))
    assert len({c["message"]["content"] for c in data["choices"]}) == 1


def test_sampled_n_choices_are_reproducible_under_a_seed(http: httpx.Client) -> None:
    """llama.cpp's seed per request: the same seed gives the same n choices."""
    body = chat(n=2, max_tokens=8, temperature=1.0, seed=11)
    first = [c["message"]["content"] for c in ok(http, CHAT_PATH, body)["choices"]]
    assert first == [c["message"]["content"] for c in ok(http, CHAT_PATH, body)["choices"]]


def test_streamed_n_choices_interleave_by_index(http: httpx.Client) -> None:
    """vLLM n>1 streaming: chunks name their choice's index; each index opens with the role
    and finishes once."""
    chunks, payloads = sse(http, CHAT_PATH, chat(n=2, max_tokens=4, temperature=0))
    by_index: dict[int, list[dict[str, Any]]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            by_index.setdefault(choice["index"], []).append(choice)
    assert sorted(by_index) == [0, 1]
    for choices in by_index.values():
        assert choices[0]["delta"]["role"] == "assistant"
        assert [c["finish_reason"] for c in choices if c["finish_reason"]] == ["length"]
    assert payloads[-1] == "[DONE]"


def test_completions_n_per_prompt(http: httpx.Client) -> None:
    """OpenAI completions: n choices per prompt, index = prompt * n + i."""
    data = ok(http, COMPLETIONS, {"model": TINY, "prompt": ["the cat", "a dog"], "n": 2,
                                  "max_tokens": 3, "temperature": 0})
    assert [c["index"] for c in data["choices"]] == [0, 1, 2, 3]
    assert data["choices"][0]["text"] == data["choices"][1]["text"]


def test_the_sdk_reads_n_choices(sdk: openai.OpenAI) -> None:
    """The OpenAI library with n=2."""
    reply = sdk.chat.completions.create(model=CHAT, messages=MESSAGES,  # type: ignore[arg-type]
                                        n=2, max_tokens=3)
    assert len(reply.choices) == 2


def test_n_one_is_the_default_single_choice(http: httpx.Client) -> None:
    """n=1 (the default) answers one choice."""
    assert len(ok(http, CHAT_PATH, chat(n=1, max_tokens=2))["choices"]) == 1
