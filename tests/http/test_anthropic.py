"""Anthropic's Messages API through the official ``anthropic`` SDK, unmodified, against the real
app on a socket with real llama.cpp workers serving the embedded SmolLM2 (ChatML template)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from llamahomed.http.app import create_app
from llamahomed.registry.default_model import SMOLLM2_ID
from tests.fixtures.http import post

# This SDK's typed create() has no temperature (newer Claude models dropped the sampling
# fields); older SDKs and other clients send it, and extra_body sends it here.
ZERO: dict[str, Any] = {"extra_body": {"temperature": 0}}
GREEDY: dict[str, Any] = {"max_tokens": 16, **ZERO}
QUESTION = [{"role": "user", "content": "Name three colours."}]
SYSTEM = "You are a terse assistant."


async def serve(aiohttp_client: Any, make_settings: Any, smollm2_file: Path, tmp_path: Path,
                engine: str = "batched") -> Any:
    store = tmp_path / f"smollm2-{engine}"
    store.mkdir()
    os.link(smollm2_file, store / smollm2_file.name)
    settings = make_settings(models_dir=store, model_settings={"default_model": SMOLLM2_ID},
                             system_settings={"n_ctx": 1024, "engine": engine})
    return await aiohttp_client(create_app(settings)), settings


def sdk(app: Any, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=str(app.make_url("")), api_key=key, max_retries=0)


@pytest.fixture
async def daemon(aiohttp_client: Any, make_settings: Any, smollm2_file: Path,
                 tmp_path: Path) -> AsyncIterator[tuple[anthropic.AsyncAnthropic, Any, str]]:
    """The SDK with the admin token as its api key, the app, the token."""
    app, settings = await serve(aiohttp_client, make_settings, smollm2_file, tmp_path)
    token = settings.admin_token_file.read_text().strip()
    client = sdk(app, token)
    yield client, app, token
    await client.close()


async def test_create_renders_the_template_with_system_as_string_or_blocks(daemon: Any) -> None:
    client, app, token = daemon
    plain = await client.messages.create(model=SMOLLM2_ID, system=SYSTEM, messages=QUESTION,
                                         **GREEDY)
    blocks = await client.messages.create(
        model=SMOLLM2_ID, system=[{"type": "text", "text": SYSTEM}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Name three colours."}]}],
        **GREEDY)
    openai = await post(app, {"Authorization": f"Bearer {token}"}, "/v1/chat/completions", {
        "model": SMOLLM2_ID, "temperature": 0, "max_tokens": 16,
        "messages": [{"role": "system", "content": SYSTEM}, *QUESTION]})
    assert plain.type == "message" and plain.role == "assistant" and plain.id.startswith("msg_")
    assert plain.model == SMOLLM2_ID
    assert [block.type for block in plain.content] == ["text"]
    assert plain.content[0].text == openai["choices"][0]["message"]["content"]  # type: ignore[union-attr]
    assert blocks.content == plain.content
    assert plain.usage.input_tokens == openai["usage"]["prompt_tokens"] == blocks.usage.input_tokens
    assert plain.usage.output_tokens == openai["usage"]["completion_tokens"]
    assert plain.stop_reason in ("end_turn", "max_tokens") and plain.stop_sequence is None
    assert plain._request_id  # Anthropic's request-id header


async def test_max_tokens_ends_with_stop_reason_max_tokens(daemon: Any) -> None:
    client, _, _ = daemon
    reply = await client.messages.create(model=SMOLLM2_ID, messages=QUESTION, max_tokens=3, **ZERO)
    assert reply.stop_reason == "max_tokens" and reply.stop_sequence is None
    assert reply.usage.output_tokens == 3


@pytest.mark.parametrize("engine", ["sequential", "batched"])
async def test_a_stop_sequence_is_named_in_stop_reason_and_stop_sequence(
        aiohttp_client: Any, make_settings: Any, smollm2_file: Path, tmp_path: Path,
        engine: str) -> None:
    app, settings = await serve(aiohttp_client, make_settings, smollm2_file, tmp_path, engine)
    async with sdk(app, settings.admin_token_file.read_text().strip()) as client:
        whole = await client.messages.create(model=SMOLLM2_ID, messages=QUESTION,
                                             max_tokens=24, **ZERO)
        text = whole.content[0].text  # type: ignore[union-attr]
        words = text.split()
        assert len(words) >= 3, text
        stop = words[2]
        cut = await client.messages.create(model=SMOLLM2_ID, messages=QUESTION, max_tokens=24,
                                           stop_sequences=["@@never@@", stop], **ZERO)
    assert cut.stop_reason == "stop_sequence"
    assert cut.stop_sequence == stop
    assert cut.content[0].text == text[:text.index(stop)]  # type: ignore[union-attr]


async def test_streaming_text_and_final_message(daemon: Any) -> None:
    client, _, _ = daemon
    whole = await client.messages.create(model=SMOLLM2_ID, system=SYSTEM, messages=QUESTION,
                                         **GREEDY)
    async with client.messages.stream(model=SMOLLM2_ID, system=SYSTEM, messages=QUESTION,
                                      **GREEDY) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == whole.content[0].text  # type: ignore[union-attr]
    assert [(b.type, b.text) for b in final.content] == [  # type: ignore[union-attr]
        (b.type, b.text) for b in whole.content]  # type: ignore[union-attr]
    assert final.stop_reason == whole.stop_reason
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens


async def test_count_tokens_counts_what_create_is_charged(daemon: Any) -> None:
    client, _, _ = daemon
    conversation: Any = [{"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello! How can I help?"},
                         {"role": "user", "content": "Name three colours."}]
    counted = await client.messages.count_tokens(model=SMOLLM2_ID, system=SYSTEM,
                                                 messages=conversation)
    reply = await client.messages.create(model=SMOLLM2_ID, system=SYSTEM, messages=conversation,
                                         max_tokens=2, **ZERO)
    shorter = await client.messages.count_tokens(model=SMOLLM2_ID, messages=QUESTION,
                                                 system=SYSTEM)
    assert counted.input_tokens == reply.usage.input_tokens
    assert 0 < shorter.input_tokens < counted.input_tokens


async def test_the_api_key_is_a_llamahome_token(daemon: Any) -> None:
    client, app, token = daemon
    async with sdk(app, token + "x") as wrong:
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await wrong.messages.create(model=SMOLLM2_ID, messages=QUESTION, max_tokens=2)
    assert refused.value.status_code == 401
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    async with anthropic.AsyncAnthropic(base_url=str(app.make_url("")), auth_token=token,
                                        max_retries=0) as bearer:
        reply = await bearer.messages.create(model=SMOLLM2_ID, messages=QUESTION, max_tokens=2)
    assert reply.usage.output_tokens == 2


async def test_unknown_model_and_invalid_bodies_raise_the_sdks_errors(daemon: Any) -> None:
    client, _, _ = daemon
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="claude-sonnet-4-5", messages=QUESTION, max_tokens=2)
    assert missing.value.body["type"] == "error"  # type: ignore[index]
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "claude-sonnet-4-5" in missing.value.message
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client.messages.create(model=SMOLLM2_ID, messages=QUESTION, max_tokens=2,
                                     extra_body={"temperature": 3.0})
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "temperature" in bad.value.message
    with pytest.raises(anthropic.BadRequestError) as tools:  # not an object schema
        await client.messages.create(model=SMOLLM2_ID, messages=QUESTION, max_tokens=2, tools=[
            {"name": "weather", "description": "today's weather",
             "input_schema": {"type": "string"}}])
    assert "tools.0.input_schema" in tools.value.message
    assert tools.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.count_tokens(model=SMOLLM2_ID, messages=[])


async def test_output_config_format_constrains_the_answer_to_the_schema(daemon: Any) -> None:
    client, _, _ = daemon
    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}},
              "required": ["colour"], "additionalProperties": False}
    reply = await client.messages.create(
        model=SMOLLM2_ID, max_tokens=40, messages=[{"role": "user", "content": "Pick a colour."}],
        output_config={"format": {"type": "json_schema", "schema": schema}}, **ZERO)
    assert reply.stop_reason == "end_turn"
    answer = json.loads(reply.content[0].text)  # type: ignore[union-attr]
    assert set(answer) == {"colour"} and answer["colour"] in ("red", "green", "blue")
