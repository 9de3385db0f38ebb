"""The OpenAI-compatible routes, driven by the official ``openai`` package, unmodified, against
the real app with real workers and real llama.cpp (tiny models; one carries a chat template)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from llamahomed.http.keys import INFERENCE
from tests.conftest import TINY_MODEL_ID
from tests.fixtures.observe import finish_reasons
from tests.fixtures.tiny_gguf import write_tiny_llama

GREEDY = {"temperature": 0, "max_tokens": 12}


async def process(api: Any, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await api.post("/api/v1/process", json=body, headers=auth)
    assert response.status == 200, await response.text()
    data: dict[str, Any] = await response.json()
    return data


def chatml(*turns: tuple[str, str]) -> str:
    """What the tiny model's ChatML template renders (BOS is added by the tokenizer)."""
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
    return text + "<|im_start|>assistant\n"


async def test_chat_completion_renders_the_models_template(
        client: openai.AsyncOpenAI, api: Any, auth: dict[str, str], chat_model: str) -> None:
    turns = [("system", "you are a llama"), ("user", "hello there")]
    reply = await client.chat.completions.create(
        model=chat_model, messages=[{"role": r, "content": c} for r, c in turns], **GREEDY)
    expected = await process(api, auth, model=chat_model, prompt=chatml(*turns), raw=True,
                             **GREEDY)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.model == chat_model
    (choice,) = reply.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == expected["text"]
    assert choice.finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == expected["usage"]["prompt_tokens"]
    assert reply.usage.completion_tokens == 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 12


async def test_chat_streaming_with_usage(client: openai.AsyncOpenAI, chat_model: str) -> None:
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "tell me"}]}]
    whole = await client.chat.completions.create(model=chat_model, messages=messages, **GREEDY)
    stream = await client.chat.completions.create(
        model=chat_model, messages=messages, stream=True,
        stream_options={"include_usage": True}, **GREEDY)
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["length"]
    *_, last = chunks
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump() == whole.usage.model_dump()  # type: ignore[union-attr]
    assert all(c.usage is None for c in chunks[:-1])


async def test_completions_plain_and_streamed(client: openai.AsyncOpenAI, api: Any,
                                              auth: dict[str, str]) -> None:
    expected = await process(api, auth, prompt="the cat sat on", **GREEDY)
    reply = await client.completions.create(model=TINY_MODEL_ID, prompt="the cat sat on", **GREEDY)
    assert reply.object == "text_completion"
    assert reply.choices[0].text == expected["text"]
    assert reply.usage is not None and reply.usage.model_dump(exclude_none=True) == expected["usage"]
    stream = await client.completions.create(model=TINY_MODEL_ID, prompt="the cat sat on",
                                             stream=True, **GREEDY)
    pieces = [chunk.choices[0].text async for chunk in stream]
    assert "".join(pieces) == expected["text"]


async def test_completions_take_a_list_of_prompts(client: openai.AsyncOpenAI, api: Any,
                                                  auth: dict[str, str]) -> None:
    prompts = ["the cat", "a dog and a"]
    reply = await client.completions.create(model=TINY_MODEL_ID, prompt=prompts, **GREEDY)
    assert [c.index for c in reply.choices] == [0, 1]
    for prompt, choice in zip(prompts, reply.choices):
        assert choice.text == (await process(api, auth, prompt=prompt, **GREEDY))["text"]


async def test_llamahome_options_pass_through_extra_body(
        client: openai.AsyncOpenAI, api: Any, auth: dict[str, str]) -> None:
    options = {"repeat_penalty": 1.8, "top_k": 1}
    reply = await client.completions.create(model=TINY_MODEL_ID, prompt="one two one two",
                                            extra_body=options, temperature=0, max_tokens=24)
    penalised = await process(api, auth, prompt="one two one two", temperature=0, max_tokens=24,
                              **options)
    plain = await process(api, auth, prompt="one two one two", temperature=0, max_tokens=24,
                          repeat_penalty=1.0)
    assert reply.choices[0].text == penalised["text"]
    assert penalised["text"] != plain["text"]


async def test_context_size_through_extra_body_loads_a_bigger_context_once(
        client: openai.AsyncOpenAI, aiohttp_client: Any, make_settings: Any) -> None:
    from llamahomed.http.app import create_app

    settings = make_settings(system_settings={"n_ctx": 256})
    write_tiny_llama(settings.models_path / "tiny-long.gguf",
                     n_ctx=4096, name="tiny-long")
    app_client = await aiohttp_client(create_app(settings))
    token = settings.admin_token_file.read_text().strip()
    sdk = openai.AsyncOpenAI(base_url=str(app_client.make_url("/v1")), api_key=token,
                             max_retries=0)
    try:
        long_prompt = "the cat " * 150  # > 256 tokens
        with pytest.raises(openai.BadRequestError) as info:
            await sdk.completions.create(model="tiny-long", prompt=long_prompt, max_tokens=2)
        assert info.value.code == "context_length_exceeded"
        reply = await sdk.completions.create(model="tiny-long", prompt=long_prompt, max_tokens=2,
                                             extra_body={"n_ctx": 1024})
        assert reply.usage is not None and reply.usage.prompt_tokens > 256
        worker = app_client.server.app[INFERENCE].pool.workers()["tiny-long"]
        assert worker.config.n_ctx == 1024
        await sdk.completions.create(model="tiny-long", prompt="hi", max_tokens=2)
        assert app_client.server.app[INFERENCE].pool.workers()["tiny-long"] is worker  # no reload
    finally:
        await sdk.close()


async def test_models_list_and_get(client: openai.AsyncOpenAI, chat_model: str) -> None:
    listed = [m async for m in client.models.list()]
    assert sorted(m.id for m in listed) == sorted([TINY_MODEL_ID, chat_model])
    assert all(m.object == "model" and m.owned_by == "llamahome" and m.created > 0 for m in listed)
    assert (await client.models.retrieve(chat_model)).id == chat_model


async def test_errors_reach_the_sdk_as_its_own_exceptions(
        client: openai.AsyncOpenAI, api: Any, chat_model: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await client.completions.create(model="no-such-model", prompt="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as no_template:
        await client.chat.completions.create(model=TINY_MODEL_ID,
                                             messages=[{"role": "user", "content": "hi"}])
    assert "chat template" in no_template.value.message
    with pytest.raises(openai.BadRequestError) as several:
        await client.chat.completions.create(model=chat_model, n=17,
                                             messages=[{"role": "user", "content": "hi"}])
    assert several.value.param == "n"
    with pytest.raises(openai.BadRequestError) as bad:  # 400 with param, as OpenAI answers
        await client.completions.create(model=TINY_MODEL_ID, prompt="x", temperature=-1)
    assert bad.value.param == "temperature" and bad.value.status_code == 400
    wrong_key = openai.AsyncOpenAI(base_url=str(api.make_url("/v1")), api_key="nope",
                                   max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await wrong_key.models.list()
    await wrong_key.close()


@pytest.mark.parametrize(("method", "path", "body", "status", "kind"), [
    ("GET", "/v1/models", None, 401, "authentication_error"),
    ("GET", "/v1/nope", {}, 404, "not_found_error"),
    ("DELETE", "/v1/completions", {}, 405, "invalid_request_error"),
    ("POST", "/v1/completions", {"prompt": "x", "temperature": "hot"}, 400, "invalid_request_error"),
    ("POST", "/v1/completions", {"prompt": "the cat " * 400}, 400, "invalid_request_error"),
])
async def test_errors_on_v1_routes_have_openais_shape(
        api: Any, auth: dict[str, str], method: str, path: str, body: Any, status: int,
        kind: str) -> None:
    headers = {} if body is None else auth
    response = await api.request(method, path, headers=headers, json=body)
    assert response.status == status
    error = (await response.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == kind and error["message"]


async def test_a_client_that_leaves_an_sse_stream_cancels_its_sequence(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    write_tiny_llama(settings.models_path / "tiny-long.gguf",
                     n_ctx=4096, name="tiny-long")
    response = await api.post("/v1/completions", headers=auth, json={
        "model": "tiny-long", "prompt": "the cat", "max_tokens": 4000, "temperature": 0,
        "stream": True})
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = 0
    while events < 3:
        line = await response.content.readline()
        if line.startswith(b"data: "):
            assert json.loads(line[6:])["choices"][0]["finish_reason"] is None
            events += 1
    worker = api.server.app[INFERENCE].pool.workers()["tiny-long"]
    response.close()
    for _ in range(100):
        await asyncio.sleep(0.05)
        if worker.in_flight == 0:
            break
    assert finish_reasons(api.server.app, "tiny-long") == {"cancelled": 1}
    generated = worker.tokens_generated
    await asyncio.sleep(0.3)
    assert worker.tokens_generated == generated


async def test_embeddings_from_a_pooling_model_match_llama_cpp(
        client: openai.AsyncOpenAI, api: Any, auth: dict[str, str], settings: Any) -> None:
    from llama_cpp import Llama

    path = write_tiny_llama(
        settings.models_path / "tiny-embed.gguf", name="tiny-embed", pooling=True)
    texts = ["the cat sat on the mat", "hello world", "the cat sat on the mat"]
    reply = await client.embeddings.create(model="tiny-embed", input=texts)  # SDK asks for base64
    assert [d.index for d in reply.data] == [0, 1, 2]
    vectors = [d.embedding for d in reply.data]
    assert all(len(v) == 64 for v in vectors)
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    reference = Llama(model_path=str(path), embedding=True, verbose=False, n_ctx=256)
    try:
        expected = reference.embed(texts[:2], normalize=True)
        n_tokens = sum(len(reference.tokenize(t.encode())) for t in texts)
    finally:
        reference.close()
    for got, want in zip(vectors, expected):
        assert sum(g * g for g in got) == pytest.approx(1.0, abs=1e-5)
        assert got == pytest.approx(want, abs=1e-4)
    assert reply.usage.prompt_tokens == n_tokens
    floats = await api.post("/v1/embeddings", headers=auth,
                            json={"model": "tiny-embed", "input": "hello world"})
    body = await floats.json()
    assert body["data"][0]["embedding"] == pytest.approx(vectors[1], abs=1e-6)


@pytest.mark.gemma
async def test_the_sdk_gets_real_text_from_gemma(gemma_sdk: openai.AsyncOpenAI) -> None:
    sdk = gemma_sdk
    prompt = "The Eiffel Tower is located in the city of"
    reply = await sdk.completions.create(model="gemma3-270m", prompt=prompt, max_tokens=8,
                                         temperature=0)
    assert "Paris" in reply.choices[0].text
    stream = await sdk.completions.create(model="gemma3-270m", prompt=prompt, max_tokens=8,
                                          temperature=0, stream=True)
    assert "".join([c.choices[0].text async for c in stream]) == reply.choices[0].text
    with pytest.raises(openai.BadRequestError) as info:  # the base model has no chat template
        await sdk.chat.completions.create(model="gemma3-270m",
                                          messages=[{"role": "user", "content": "hi"}])
    assert "no chat template" in info.value.message


async def test_fields_the_daemon_does_not_know_are_ignored(api: Any, auth: dict[str, str]) -> None:
    """Newer OpenAI fields (and vendor ones) in the body and in messages do not fail a request."""
    response = await api.post("/v1/completions", headers=auth, json={
        "model": TINY_MODEL_ID, "prompt": "the cat", "max_tokens": 2, "store": False,
        "metadata": {"who": "test"}, "service_tier": "auto", "bogus": 1})
    assert response.status == 200, await response.text()
    assert (await response.json())["usage"]["completion_tokens"] == 2


async def test_continuous_usage_stats_put_the_usage_so_far_on_every_chunk(
        api: Any, auth: dict[str, str]) -> None:
    response = await api.post("/v1/completions", headers=auth, json={
        "model": TINY_MODEL_ID, "prompt": "the cat", "max_tokens": 5, "temperature": 0,
        "stream": True, "stream_options": {"continuous_usage_stats": True}})
    chunks = [json.loads(line[6:]) async for line in response.content
              if line.startswith(b"data: {")]
    counts = [c["usage"]["completion_tokens"] for c in chunks if c.get("choices")]
    assert counts == sorted(counts) and counts[-1] == 5
    assert all(c["usage"]["prompt_tokens"] > 0 for c in chunks if c.get("choices"))


async def test_echo_puts_the_prompt_before_the_completion(api: Any, auth: dict[str, str]) -> None:
    body = {"model": TINY_MODEL_ID, "prompt": "the cat sat", "max_tokens": 4, "temperature": 0}
    plain = (await (await api.post("/v1/completions", headers=auth, json=body)).json())
    echoed = (await (await api.post("/v1/completions", headers=auth,
                                    json={**body, "echo": True})).json())
    assert echoed["choices"][0]["text"] == "the cat sat" + plain["choices"][0]["text"]
    assert echoed["usage"] == plain["usage"]
    streamed = await api.post("/v1/completions", headers=auth,
                              json={**body, "echo": True, "stream": True})
    chunks = [json.loads(line[6:]) async for line in streamed.content if line.startswith(b"data: {")]
    texts = [c["choices"][0]["text"] for c in chunks if c["choices"]]
    assert texts[0] == "the cat sat" and "".join(texts) == echoed["choices"][0]["text"]
