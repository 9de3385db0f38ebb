"""What OpenAI's peers expect of generation on ``/v1``: the response and chunk shapes, SSE
framing (the role in the first chunk, one finish chunk, ``data: [DONE]``, ``include_usage``),
``stop``, ``max_tokens`` / ``max_completion_tokens``, seeds, ``echo``, prompt lists, and
``response_format``.

Peers: llama.cpp (tools/server/tests/unit: test_chat_completion, test_completion,
test_stream), vLLM (tests/entrypoints/openai: test_chat, test_completion, test_chat_echo,
test_system_fingerprint_none), Ollama (openai/openai_test.go, docs/openai.md).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.http.openai_compat.conftest import CHAT, GEMMA, SMOL, TINY
from tests.http.openai_compat.wire import chat_text, completion_text, error, ok, sse

CHAT_PATH, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
MESSAGES = [{"role": "system", "content": "you are terse"}, {"role": "user", "content": "hi"}]
GREEDY = {"temperature": 0, "max_tokens": 8}
ROUTES = [pytest.param(CHAT_PATH, {"model": CHAT, "messages": MESSAGES}, id="chat"),
          pytest.param(COMPLETIONS, {"model": TINY, "prompt": "the cat sat"}, id="completions")]


def text_of(path: str, data: dict[str, Any], index: int = 0) -> str:
    choice = data["choices"][index]
    return str(choice["message"]["content"] if path == CHAT_PATH else choice["text"])


def streamed_text(path: str, chunks: list[dict[str, Any]]) -> str:
    return chat_text(chunks) if path == CHAT_PATH else completion_text(chunks)


# -- response shapes ----------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_a_response_has_openais_shape(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    """llama.cpp test_chat_completion / test_completion and vLLM test_single_completion: id,
    object, created, model, one choice with index 0, usage that adds up."""
    data = ok(http, path, {**body, **GREEDY})
    prefix, kind = ("chatcmpl-", "chat.completion") if path == CHAT_PATH else ("cmpl-",
                                                                                "text_completion")
    assert data["id"].startswith(prefix) and data["object"] == kind
    assert isinstance(data["created"], int) and data["created"] > 0
    assert data["model"] == body["model"]
    (choice,) = data["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length"
    assert "logprobs" in choice and choice["logprobs"] is None
    usage = data["usage"]
    assert usage["completion_tokens"] == 8 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_a_chat_message_is_the_assistants(http: httpx.Client) -> None:
    """vLLM test_single_chat_session: the message's role is assistant, its content a string."""
    message = ok(http, CHAT_PATH, {"model": CHAT, "messages": MESSAGES, **GREEDY})[
        "choices"][0]["message"]
    assert message["role"] == "assistant" and isinstance(message["content"], str)


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_system_fingerprint_is_present_and_null(http: httpx.Client, path: str,
                                                body: dict[str, Any]) -> None:
    """vLLM test_system_fingerprint_none: the key is there, null (no backend fingerprint)."""
    data = ok(http, path, {**body, **GREEDY})
    assert "system_fingerprint" in data and data["system_fingerprint"] is None


def test_a_multi_turn_chat_continues(sdk: openai.OpenAI) -> None:
    """vLLM test_single_chat_session: the assistant's answer fed back as history works."""
    first = sdk.chat.completions.create(model=CHAT, messages=MESSAGES, **GREEDY)  # type: ignore[arg-type]
    history = [*MESSAGES, {"role": "assistant", "content": first.choices[0].message.content},
               {"role": "user", "content": "and then?"}]
    second = sdk.chat.completions.create(model=CHAT, messages=history, **GREEDY)  # type: ignore[arg-type]
    assert second.usage is not None and first.usage is not None
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


# -- streaming ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_a_stream_ends_with_done_and_carries_the_same_text(http: httpx.Client, path: str,
                                                            body: dict[str, Any]) -> None:
    """llama.cpp test_completion_stream_vs_non_stream, vLLM test_chat_streaming: the streamed
    pieces join to the non-streamed text; the stream's last event is ``data: [DONE]``."""
    whole = text_of(path, ok(http, path, {**body, **GREEDY}))
    chunks, payloads = sse(http, path, {**body, **GREEDY})
    assert payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1
    assert streamed_text(path, chunks) == whole


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_exactly_one_chunk_finishes_and_it_is_the_last_choice_chunk(
        http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    """vLLM test_chat_streaming: 'finish reason should only return in last block'."""
    chunks, _ = sse(http, path, {**body, **GREEDY})
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert reasons[-1] == "length" and all(r is None for r in reasons[:-1])


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_every_chunk_shares_one_id_and_has_the_chunk_object(http: httpx.Client, path: str,
                                                            body: dict[str, Any]) -> None:
    """llama.cpp test_stream / vLLM: one id across a stream; ``chat.completion.chunk`` or
    ``text_completion`` objects with the model's name."""
    chunks, _ = sse(http, path, {**body, **GREEDY})
    kind = "chat.completion.chunk" if path == CHAT_PATH else "text_completion"
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == kind and c["model"] == body["model"] for c in chunks)
    assert all(isinstance(c["created"], int) for c in chunks)


def test_the_first_chat_chunk_carries_the_assistant_role(http: httpx.Client) -> None:
    """vLLM test_chat_streaming and OpenAI: ``delta.role == 'assistant'`` opens the stream;
    later deltas carry no role."""
    chunks, _ = sse(http, CHAT_PATH, {"model": CHAT, "messages": MESSAGES, **GREEDY})
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:] if c["choices"])


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_no_usage_is_streamed_unless_asked(http: httpx.Client, path: str,
                                           body: dict[str, Any]) -> None:
    """vLLM test_chat_completion_stream_options (include_usage false): no usage anywhere."""
    for options in (None, {"include_usage": False}):
        extra = {} if options is None else {"stream_options": options}
        chunks, _ = sse(http, path, {**body, **GREEDY, **extra})
        assert all(c.get("usage") is None for c in chunks)


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_include_usage_adds_one_final_chunk_with_empty_choices(http: httpx.Client, path: str,
                                                               body: dict[str, Any]) -> None:
    """vLLM test_chat_completion_stream_options and Ollama's 'streaming usage': after the finish
    chunk, one chunk with ``choices: []`` and the usage; none before it."""
    whole = ok(http, path, {**body, **GREEDY})
    chunks, _ = sse(http, path, {**body, **GREEDY, "stream_options": {"include_usage": True}})
    *rest, last = chunks
    assert last["choices"] == [] and last["usage"] == whole["usage"]
    assert all(c.get("usage") is None for c in rest)
    assert rest[-1]["choices"][0]["finish_reason"] == "length"


def test_continuous_usage_stats_count_up_to_max_tokens(http: httpx.Client) -> None:
    """vLLM test_chat_completion_stream_options (continuous_usage_stats): every chunk has the
    usage so far; completion_tokens grow to the total."""
    chunks, _ = sse(http, CHAT_PATH, {"model": CHAT, "messages": MESSAGES, **GREEDY,
                                      "stream_options": {"include_usage": True,
                                                         "continuous_usage_stats": True}})
    counts = [c["usage"]["completion_tokens"] for c in chunks if c.get("usage")]
    assert counts == sorted(counts) and counts[-1] == 8
    assert all(c["usage"]["total_tokens"] == c["usage"]["prompt_tokens"]
               + c["usage"]["completion_tokens"] for c in chunks if c.get("usage"))


@pytest.mark.parametrize("kind", ["chat", "completions"])
def test_the_sdk_streams(sdk: openai.OpenAI, kind: str) -> None:
    """llama.cpp test_completion_stream_with_openai_library / test_chat_completion_stream: the
    official client reads the stream and its usage chunk."""
    if kind == "chat":
        stream: Any = sdk.chat.completions.create(
            model=CHAT, messages=MESSAGES, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True}, **GREEDY)
    else:
        stream = sdk.completions.create(model=TINY, prompt="the cat sat", stream=True,
                                        stream_options={"include_usage": True}, **GREEDY)
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    assert sum(1 for c in chunks if c.choices and c.choices[0].finish_reason) == 1


# -- max_tokens, stop, seeds --------------------------------------------------------------------

@pytest.mark.parametrize("limit", [1, 3, 7])
@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_max_tokens_caps_the_completion(http: httpx.Client, path: str, body: dict[str, Any],
                                        limit: int) -> None:
    """llama.cpp test_completion (n_predict) / vLLM: exactly ``max_tokens`` tokens, 'length'."""
    data = ok(http, path, {**body, "temperature": 0, "max_tokens": limit})
    assert data["usage"]["completion_tokens"] == limit
    assert data["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("limit", [2, 5])
def test_max_completion_tokens_is_chats_name_and_wins_over_max_tokens(http: httpx.Client,
                                                                     limit: int) -> None:
    """vLLM test_chat (max_completion_tokens everywhere): OpenAI's newer name; when both are
    given, max_completion_tokens counts."""
    data = ok(http, CHAT_PATH, {"model": CHAT, "messages": MESSAGES, "temperature": 0,
                                "max_completion_tokens": limit, "max_tokens": 9})
    assert data["usage"]["completion_tokens"] == limit


@pytest.mark.parametrize("as_list", [False, True])
@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_stop_ends_before_the_stop_text(http: httpx.Client, path: str, body: dict[str, Any],
                                        as_list: bool) -> None:
    """llama.cpp test_completion_stop / Ollama 'stop': the text ends before the first stop
    string, which is not included, and finish_reason is 'stop'."""
    free = text_of(path, ok(http, path, {**body, "temperature": 0, "max_tokens": 24}))
    words = free.split()
    assert len(words) >= 4, free
    stop = words[len(words) // 2]
    data = ok(http, path, {**body, "temperature": 0, "max_tokens": 24,
                           "stop": [stop, "\u2603never"] if as_list else stop})
    assert text_of(path, data) == free[:free.index(stop)]
    assert data["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_stop_also_ends_a_stream(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    """llama.cpp test_stream: a stop string is held back across chunk boundaries."""
    free = text_of(path, ok(http, path, {**body, "temperature": 0, "max_tokens": 24}))
    stop = free.split()[len(free.split()) // 2]
    chunks, _ = sse(http, path, {**body, "temperature": 0, "max_tokens": 24, "stop": [stop]})
    assert streamed_text(path, chunks) == free[:free.index(stop)]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"


@pytest.mark.parametrize("seed", [1, 42, 12345])
@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_the_same_seed_gives_the_same_text(http: httpx.Client, path: str, body: dict[str, Any],
                                           seed: int) -> None:
    """llama.cpp test_consistent_result_same_seed, Ollama's seed option: sampling at
    temperature 1 repeats under one seed."""
    request = {**body, "temperature": 1.0, "max_tokens": 12, "seed": seed}
    assert text_of(path, ok(http, path, request)) == text_of(path, ok(http, path, request))


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_different_seeds_give_different_text(http: httpx.Client, path: str,
                                             body: dict[str, Any]) -> None:
    """llama.cpp test_different_result_different_seed: at least two of four seeds differ."""
    texts = {text_of(path, ok(http, path, {**body, "temperature": 1.0, "max_tokens": 12,
                                           "seed": s})) for s in range(4)}
    assert len(texts) > 1


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_temperature_zero_is_deterministic(http: httpx.Client, path: str,
                                           body: dict[str, Any]) -> None:
    """llama.cpp test_consistent_result_different_batch_size (greedy): two runs agree."""
    assert text_of(path, ok(http, path, {**body, **GREEDY})) == text_of(
        path, ok(http, path, {**body, **GREEDY}))


# -- completions specifics ----------------------------------------------------------------------

def test_echo_prefixes_the_prompt(http: httpx.Client) -> None:
    """vLLM test_completion (echo) / OpenAI: echo puts the prompt before the completion."""
    body = {"model": TINY, "prompt": "the cat sat", **GREEDY}
    plain = ok(http, COMPLETIONS, body)["choices"][0]["text"]
    assert ok(http, COMPLETIONS, {**body, "echo": True})["choices"][0]["text"] == (
        "the cat sat" + plain)


def test_a_list_of_prompts_gets_one_choice_each_in_order(http: httpx.Client) -> None:
    """vLLM test_batch_completions: a prompt list answers with choices indexed in order, usage
    summed."""
    prompts = ["the cat", "a dog and a", "one two"]
    data = ok(http, COMPLETIONS, {"model": TINY, "prompt": prompts, **GREEDY})
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    for prompt, choice in zip(prompts, data["choices"]):
        alone = ok(http, COMPLETIONS, {"model": TINY, "prompt": prompt, **GREEDY})
        assert choice["text"] == alone["choices"][0]["text"]
    assert data["usage"]["completion_tokens"] == 3 * 8


@pytest.mark.parametrize("prompt", [[1, 2, 3], [[1, 2, 3], [4, 5]]])
def test_a_prompt_may_be_token_ids(http: httpx.Client, prompt: Any) -> None:
    """llama.cpp test_completion_with_tokens_input, vLLM test_completion (prompt token ids):
    OpenAI's ``prompt`` is also a list of token ids or a list of them."""
    data = ok(http, COMPLETIONS, {"model": TINY, "prompt": prompt, **GREEDY})
    assert len(data["choices"]) == (2 if isinstance(prompt[0], list) else 1)


def test_token_ids_decode_as_their_text_does(http: httpx.Client) -> None:
    """A token-id prompt is decoded as given: the same answer and prompt count as its text,
    and ``echo`` repeats the text of the ids (streamed and not)."""
    text = "the cat sat on the mat"
    tokens = http.post("/tokenize", json={"model": TINY, "content": text,
                                          "add_special": True}).json()["tokens"]
    by_text = ok(http, COMPLETIONS, {"model": TINY, "prompt": text, **GREEDY})
    by_ids = ok(http, COMPLETIONS, {"model": TINY, "prompt": tokens, "echo": True, **GREEDY})
    assert by_ids["usage"]["prompt_tokens"] == len(tokens) == by_text["usage"]["prompt_tokens"]
    answer = by_text["choices"][0]["text"]
    assert by_ids["choices"][0]["text"].endswith(answer)
    assert text in by_ids["choices"][0]["text"][: -len(answer) or None]
    chunks, _ = sse(http, COMPLETIONS, {"model": TINY, "prompt": tokens, "echo": True, **GREEDY})
    assert text in completion_text(chunks) and completion_text(chunks).endswith(answer)


@pytest.mark.parametrize("prompt", [[1, 99_999_999], [[5, 6], []], [-1]])
def test_a_token_prompt_outside_the_vocabulary_is_a_400(http: httpx.Client, prompt: Any) -> None:
    assert error(http, COMPLETIONS, {"model": TINY, "prompt": prompt, **GREEDY})["param"] == "prompt"


# -- response_format ----------------------------------------------------------------------------

SAMPLE = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "max_tokens": 300}
PET = {"type": "object", "properties": {"kind": {"enum": ["cat", "dog"]},
                                        "legs": {"type": "integer"}, "ok": {"type": "boolean"}},
       "required": ["kind", "legs", "ok"], "additionalProperties": False}


REAL = [pytest.param(CHAT_PATH, {"model": SMOL, "messages": [
              {"role": "user", "content": "Give me a JSON object with a name and an age."}]},
                     id="chat-smollm2", marks=pytest.mark.smollm2),
        pytest.param(COMPLETIONS, {"model": GEMMA, "prompt": "A person as a JSON object:"},
                     id="completions-gemma", marks=pytest.mark.gemma)]


@pytest.mark.parametrize(("path", "body"), REAL)
def test_json_object_output_parses(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    """llama.cpp test_completion_with_response_format, Ollama's json format mapping: a JSON
    object comes back. (Real models: the generic JSON grammar has no length bound, so a random
    tiny model may write JSON until max_tokens.)"""
    data = ok(http, path, {**body, "temperature": 0, "max_tokens": 120,
                           "response_format": {"type": "json_object"}})
    assert data["choices"][0]["finish_reason"] == "stop", data
    assert isinstance(json.loads(text_of(path, data)), dict)


@pytest.mark.parametrize(("path", "body"), ROUTES)
@pytest.mark.parametrize("seed", [0, 1])
def test_json_schema_output_validates(http: httpx.Client, path: str, body: dict[str, Any],
                                      seed: int) -> None:
    """llama.cpp test_completion_with_json_schema, vLLM test_structured_outputs_json_chat: the
    output follows the schema."""
    data = ok(http, path, {**body, **SAMPLE, "seed": seed, "response_format": {
        "type": "json_schema", "json_schema": {"name": "pet", "schema": PET, "strict": True}}})
    jsonschema.validate(json.loads(text_of(path, data)), PET)


def test_json_schema_streams_too(http: httpx.Client) -> None:
    """vLLM test_structured_outputs_json_chat (stream): the joined stream follows the schema."""
    chunks, _ = sse(http, CHAT_PATH, {"model": CHAT, "messages": MESSAGES, **SAMPLE, "seed": 3,
                                      "response_format": {"type": "json_schema", "json_schema": {
                                          "name": "pet", "schema": PET}}})
    jsonschema.validate(json.loads(chat_text(chunks)), PET)


def test_the_sdks_parse_helper_gets_a_pydantic_object(sdk: openai.OpenAI) -> None:
    """The SDK's ``chat.completions.parse`` sends a strict json_schema and parses the answer."""
    import pydantic

    class Pet(pydantic.BaseModel):
        kind: str = pydantic.Field(max_length=6)
        legs: int

    reply = sdk.chat.completions.parse(model=CHAT, messages=MESSAGES,  # type: ignore[arg-type]
                                       response_format=Pet, seed=5, max_tokens=300,
                                       extra_body={"top_k": 0, "min_p": 0.0})
    assert isinstance(reply.choices[0].message.parsed, Pet)


def test_response_format_text_is_plain_text(http: httpx.Client) -> None:
    """OpenAI's default ``{"type": "text"}`` changes nothing."""
    body = {"model": CHAT, "messages": MESSAGES, **GREEDY}
    assert text_of(CHAT_PATH, ok(http, CHAT_PATH, {**body, "response_format": {"type": "text"}})) \
        == text_of(CHAT_PATH, ok(http, CHAT_PATH, body))
