"""Anthropic's Messages API on the wire, read raw: the exact SSE event order, an error after the
stream started, and Anthropic's error shape and statuses on every refusal (the real app on a
socket, a real llama.cpp worker on the tiny ChatML model)."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest

from llamahomed.http.keys import INFERENCE

LONG = {"max_tokens": 200, "temperature": 0}


def events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event, data)`` for each SSE event of ``raw``."""
    out = []
    for chunk in raw.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in chunk.splitlines())
        data = json.loads(fields["data"])
        assert data["type"] == fields["event"], chunk
        out.append((fields["event"], data))
    return out


def assert_anthropic_error(body: Any, kind: str) -> str:
    assert set(body) == {"type", "error", "request_id"}, body
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == kind, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return str(body["error"]["message"])


def request(model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": text}],
            **extra}


async def test_the_stream_is_anthropics_event_sequence(api: Any, auth: dict[str, str],
                                                       chat_model: str) -> None:
    whole = await api.post("/v1/messages", headers=auth, json=request(chat_model, temperature=0))
    assert whole.status == 200, await whole.text()
    answer = await whole.json()
    response = await api.post("/v1/messages", headers=auth,
                              json=request(chat_model, temperature=0, stream=True))
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["request-id"] == response.headers["x-request-id"]
    seen = events(await response.text())
    kinds = [kind for kind, _ in seen]
    deltas = kinds.count("content_block_delta")
    assert deltas >= 1
    assert kinds == ["message_start", "ping", "content_block_start",
                     *["content_block_delta"] * deltas, "content_block_stop", "message_delta",
                     "message_stop"]
    start = seen[0][1]["message"]
    assert start["id"].startswith("msg_") and start["role"] == "assistant"
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["model"] == chat_model
    assert start["usage"] == {"input_tokens": answer["usage"]["input_tokens"], "output_tokens": 0}
    assert seen[2][1] == {"type": "content_block_start", "index": 0,
                          "content_block": {"type": "text", "text": ""}}
    text = "".join(data["delta"]["text"] for kind, data in seen if kind == "content_block_delta")
    assert all(data["delta"]["type"] == "text_delta" and data["index"] == 0
               for kind, data in seen if kind == "content_block_delta")
    assert answer["content"] == [{"type": "text", "text": text}]
    assert seen[-2][1] == {"type": "message_delta",
                           "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                           "usage": answer["usage"]}
    assert answer["usage"]["output_tokens"] == 8


async def test_an_error_after_the_stream_started_is_an_error_event(
        api: Any, auth: dict[str, str], chat_model: str) -> None:
    response = await api.post("/v1/messages", headers=auth,
                              json=request(chat_model, stream=True, **LONG))
    assert response.status == 200
    first = await response.content.readuntil(b"\n\n")
    assert first.startswith(b"event: message_start")
    worker = api.server.app[INFERENCE].pool.workers()[chat_model]
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    seen = events((first + await response.content.read()).decode())
    kind, data = seen[-1]
    assert kind == "error"
    assert_anthropic_error(data, "api_error")
    assert "message_stop" not in [k for k, _ in seen]


CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    # (name, path, request kwargs, status, Anthropic error type)
    ("no key", "/v1/messages", {"auth": {}}, 401, "authentication_error"),
    ("wrong x-api-key", "/v1/messages", {"auth": {"x-api-key": "nope"}}, 401,
     "authentication_error"),
    ("wrong bearer", "/v1/messages/count_tokens", {"auth": {"Authorization": "Bearer nope"}}, 401,
     "authentication_error"),
    ("bad json", "/v1/messages", {"data": b"{nope"}, 400, "invalid_request_error"),
    ("no max_tokens", "/v1/messages", {"drop": "max_tokens"}, 400, "invalid_request_error"),
    ("temperature over 1", "/v1/messages", {"extra": {"temperature": 1.5}}, 400,
     "invalid_request_error"),
    ("max_tokens as a boolean", "/v1/messages", {"extra": {"max_tokens": True}}, 400,
     "invalid_request_error"),
    ("empty stop sequence", "/v1/messages", {"extra": {"stop_sequences": [""]}}, 400,
     "invalid_request_error"),
    ("unknown block", "/v1/messages", {"content": [{"type": "bogus"}]}, 400,
     "invalid_request_error"),
    ("image block", "/v1/messages", {"content": [{"type": "image", "source": {}}]}, 400,
     "invalid_request_error"),
    ("unknown model", "/v1/messages", {"extra": {"model": "claude-opus-4-1"}}, 404,
     "not_found_error"),
    ("unknown model counted", "/v1/messages/count_tokens", {"extra": {"model": "no-such"}}, 404,
     "not_found_error"),
    ("tools", "/v1/messages", {"extra": {"tools": [{"name": "f", "input_schema": {
        "type": "array"}}]}}, 400, "invalid_request_error"),
    ("server tool", "/v1/messages", {"extra": {"tools": [{"type": "web_search_20250305",
                                                          "name": "web_search"}]}}, 400,
     "invalid_request_error"),
    ("tool choice without tools", "/v1/messages", {"extra": {"tool_choice": {"type": "any"}}},
     400, "invalid_request_error"),
    ("a prefill ending in a space", "/v1/messages", {"extra": {"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure "}]}}, 400,
     "invalid_request_error"),
    ("over the max_tokens limit", "/v1/messages", {"extra": {"max_tokens": 10**7}}, 400,
     "invalid_request_error"),
    ("wrong method", "/v1/messages", {"method": "GET"}, 405, "invalid_request_error"),
    ("a schema that is no schema", "/v1/messages", {"extra": {"output_config": {"format": {
        "type": "json_schema", "schema": {"type": "object", "properties": 3}}}}}, 400,
     "invalid_request_error"),
]


@pytest.mark.parametrize(("name", "path", "spec", "status", "kind"), CASES,
                         ids=[case[0] for case in CASES])
async def test_every_refusal_has_anthropics_shape(api: Any, auth: dict[str, str], chat_model: str,
                                                  name: str, path: str, spec: dict[str, Any],
                                                  status: int, kind: str) -> None:
    body = {**request(chat_model), **spec.get("extra", {})}
    if "content" in spec:
        body["messages"] = [{"role": "user", "content": spec["content"]}]
    body.pop(spec.get("drop", ""), None)
    headers = spec.get("auth", auth)
    kwargs: dict[str, Any] = ({"data": spec["data"], "headers": {
        **headers, "Content-Type": "application/json"}} if "data" in spec
        else {"json": body, "headers": headers})
    response = await api.request(spec.get("method", "POST"), path, **kwargs)
    data = await response.json()
    assert response.status == status, data
    message = assert_anthropic_error(data, kind)
    assert response.headers["request-id"] == data["request_id"]
    assert response.headers["x-should-retry"] == "false"
    for words in SAID.get(name, ()):
        assert words in message, message


SAID = {  # what some refusals must say (the message is all Anthropic's shape carries)
    "tools": ("tools.0.input_schema", "'object'"),
    "unknown block": ("messages.0.content.0:", "'bogus'"),
    "no max_tokens": ("max_tokens: Field required",),
    "temperature over 1": ("temperature:",),
    "empty stop sequence": ("stop_sequences",),
    "image block": ("messages.0.content.0: image blocks are not supported",),
    "unknown model": ("claude-opus-4-1",),
    "a schema that is no schema": ("output_config.format.schema",),
}


async def test_a_busy_daemon_is_overloaded_529_and_retryable(api: Any, auth: dict[str, str],
                                                             chat_model: str) -> None:
    from llamahomed.core.errors import ShuttingDown

    api.server.app[INFERENCE].refusing = ShuttingDown("the daemon is stopping")
    response = await api.post("/v1/messages", headers=auth, json=request(chat_model))
    assert response.status == 529
    assert_anthropic_error(await response.json(), "overloaded_error")
    assert response.headers["x-should-retry"] == "true"


async def test_the_openai_routes_keep_openais_shape(api: Any, auth: dict[str, str]) -> None:
    response = await api.post("/v1/chat/completions", headers=auth, json={"messages": []})
    body = await response.json()
    assert response.status == 400 and set(body["error"]) == {"message", "type", "param", "code"}
    unknown = await api.get("/v1/nope", headers=auth)
    assert set((await unknown.json())["error"]) == {"message", "type", "param", "code"}


async def test_x_api_key_authenticates_every_route(api: Any, auth: dict[str, str]) -> None:
    token = auth["Authorization"].removeprefix("Bearer ")
    response = await api.get("/api/v1/models", headers={"x-api-key": token})
    assert response.status == 200
    refused = await api.get("/api/v1/models", headers={"x-api-key": token + "x"})
    assert refused.status == 401 and "code" in (await refused.json())["error"]


async def test_fields_without_a_counterpart_here_are_accepted_and_ignored(
        api: Any, auth: dict[str, str], chat_model: str) -> None:
    plain = await (await api.post("/v1/messages", headers=auth,
                                  json=request(chat_model, temperature=0))).json()
    response = await api.post("/v1/messages", headers={**auth, "anthropic-version": "2023-06-01",
                                                       "anthropic-beta": "whatever-2025"},
                              json=request(chat_model, temperature=0, top_p=1.0,
                                           metadata={"user_id": "u-1"},
                                           thinking={"type": "enabled", "budget_tokens": 1024},
                                           output_config={"effort": "low"},
                                           cache_control={"type": "ephemeral"},
                                           service_tier="auto", a_field_from_the_future=1,
                                           system=[{"type": "text", "text": "s",
                                                    "cache_control": {"type": "ephemeral"}}]))
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert answer["usage"]["output_tokens"] == plain["usage"]["output_tokens"] == 8
    assert answer["usage"]["input_tokens"] > plain["usage"]["input_tokens"]  # the system text


async def test_the_sdk_raises_an_error_event_that_comes_mid_stream(
        api: Any, auth: dict[str, str], chat_model: str) -> None:
    """The worker is frozen (SIGSTOP) at the first text, so the sequence is surely still
    running when it is killed: the stream then ends with Anthropic's error event."""
    import anthropic

    token = auth["Authorization"].removeprefix("Bearer ")
    async with anthropic.AsyncAnthropic(base_url=str(api.make_url("")), api_key=token,
                                        max_retries=0) as client:
        for _ in range(5):  # the tiny model may finish before the first text is read
            async with client.messages.stream(model=chat_model, max_tokens=200,
                                              messages=[{"role": "user", "content": "go"}],
                                              extra_body={"temperature": 0}) as stream:
                worker = api.server.app[INFERENCE].pool.workers()[chat_model]
                assert worker.pid is not None
                async for _ in stream.text_stream:
                    os.kill(worker.pid, signal.SIGSTOP)
                    break
                if worker.in_flight == 0:  # it had already finished: try again
                    os.kill(worker.pid, signal.SIGCONT)
                    async for _ in stream.text_stream:
                        pass
                    continue
                os.kill(worker.pid, signal.SIGKILL)
                with pytest.raises(anthropic.APIStatusError) as failed:
                    async for _ in stream.text_stream:
                        pass
                break
        else:
            pytest.fail("the tiny model finished before its first text was read, five times")
    assert failed.value.body["type"] == "error"  # type: ignore[index]
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]


async def test_a_final_assistant_message_is_continued(api: Any, auth: dict[str, str],
                                                      chat_model: str) -> None:
    turns = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Sure"}]
    reply = await api.post("/v1/messages", headers=auth,
                           json=request(chat_model, temperature=0, messages=turns))
    answer = await reply.json()
    assert reply.status == 200, answer
    # the tiny model's ChatML template, then the prefill, sent as it is (no new turn)
    prompt = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\nSure"
    native = await api.post("/api/v1/process", headers=auth, json={
        "model": chat_model, "prompt": prompt, "raw": True, "temperature": 0, "max_tokens": 8})
    expected = await native.json()
    assert answer["content"] == [{"type": "text", "text": expected["text"]}]
    assert answer["usage"]["input_tokens"] == expected["usage"]["prompt_tokens"]
    counted = await api.post("/v1/messages/count_tokens", headers=auth,
                             json={"model": chat_model, "messages": turns})
    assert (await counted.json()) == {"input_tokens": expected["usage"]["prompt_tokens"]}
