"""Ollama's routes with the official ``ollama`` client on the real app (tiny models, real
llama.cpp): listing, show, ps, generate and chat (streaming and not), embed, keep_alive, the
refusals, and Ollama's error shape with LlamaHome's default-deny auth."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from typing import Any

import ollama
import pytest

from tests.fixtures.tiny_gguf import DEFAULT_CHAT_TEMPLATE, write_tiny_llama
from tests.http.ollama.conftest import inference_token


@pytest.fixture
def tiny_chat(settings: Any) -> str:
    write_tiny_llama(settings.models_path / "tiny-chat.gguf", name="tiny-chat",
                     chat_template=DEFAULT_CHAT_TEMPLATE)
    return "tiny-chat"


async def test_liveness_and_version_are_public_like_ollamas(api: Any) -> None:
    root = await api.get("/")
    assert root.status == 200 and await root.text() == "Ollama is running"
    assert (await api.head("/")).status == 200
    version = await (await api.get("/api/version")).json()
    assert version["version"].count(".") == 2 and "llamahome" in version


async def test_every_other_route_needs_a_token_and_says_so_in_ollamas_shape(
        api: Any, settings: Any) -> None:
    bare = ollama.AsyncClient(host=str(api.make_url("")))
    try:
        for call in (bare.list, bare.ps, lambda: bare.show("tiny-llama"),
                     lambda: bare.generate(model="tiny-llama", prompt="x"),
                     lambda: bare.embed(model="tiny-llama", input="x")):
            with pytest.raises(ollama.ResponseError) as caught:
                await call()
            assert caught.value.status_code == 401
            assert "token" in caught.value.error.lower()
    finally:
        await bare.close()
    answer = await api.get("/api/tags")
    assert answer.status == 401 and set(await answer.json()) == {"error"}
    # model management needs the admin scope; inference tokens may use the models
    user = inference_token(settings)
    pulled = await api.post("/api/pull", headers=user, json={"model": "gemma3:270m"})
    assert pulled.status == 403
    body = await pulled.json()
    assert set(body) == {"error"} and "admin" in body["error"]
    assert (await api.get("/api/tags", headers=user)).status == 200


async def test_list_show_and_an_unknown_model(oll: ollama.AsyncClient, tiny_chat: str) -> None:
    listed = await oll.list()
    names = sorted(m.model for m in listed.models)
    assert names == ["tiny-chat:latest", "tiny-llama:latest"]
    tiny = next(m for m in listed.models if m.model == "tiny-llama:latest")
    assert tiny.size and tiny.size > 1_000_000 and len(tiny.digest or "") == 64
    assert tiny.details and tiny.details.format == "gguf" and tiny.details.family == "llama"
    assert tiny.details.quantization_level == "F32" and tiny.modified_at is not None

    shown = await oll.show("tiny-chat:latest")
    assert shown.template == DEFAULT_CHAT_TEMPLATE
    assert shown.capabilities == ["completion"]
    assert shown.modelinfo and shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 256
    assert shown.modelinfo["tokenizer.ggml.tokens"] is None  # big arrays only when verbose
    assert shown.details and shown.details.parameter_size
    assert shown.parameters and "num_ctx" in shown.parameters
    for call in (lambda: oll.show("nope"), lambda: oll.generate(model="nope:v1", prompt="x"),
                 lambda: oll.chat(model="nope", messages=[{"role": "user", "content": "x"}]),
                 lambda: oll.embed(model="nope", input="x")):
        with pytest.raises(ollama.ResponseError) as caught:
            await call()
        assert caught.value.status_code == 404
    assert caught.value.error == "model 'nope' not found"


async def test_generate_whole_and_streamed_with_ollamas_statistics(
        oll: ollama.AsyncClient) -> None:
    whole = await oll.generate(model="tiny-llama", prompt="hello",
                               options={"num_predict": 6, "temperature": 0})
    assert whole.done and whole.done_reason == "length" and whole.model == "tiny-llama"
    assert whole.eval_count == 6 and whole.prompt_eval_count and whole.prompt_eval_count >= 2
    assert whole.response
    durations = (whole.total_duration, whole.load_duration, whole.prompt_eval_duration,
                 whole.eval_duration)
    assert all(isinstance(d, int) and d > 0 for d in durations), durations
    assert whole.total_duration >= whole.load_duration + whole.eval_duration  # type: ignore[operator]
    parts = [p async for p in await oll.generate(model="tiny-llama:latest", prompt="hello",
                                                 stream=True,
                                                 options={"num_predict": 6, "temperature": 0})]
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.response for p in parts) == whole.response  # greedy: the same text
    assert parts[-1].eval_count == 6 and parts[-1].load_duration is not None
    assert parts[-1].load_duration < whole.load_duration  # type: ignore[operator] # loaded


async def test_raw_ndjson_lines_and_stream_false(api: Any, auth: dict[str, str]) -> None:
    response = await api.post("/api/generate", headers=auth, json={
        "model": "tiny-llama", "prompt": "hi", "options": {"num_predict": 3}})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in (await response.text()).splitlines()]
    assert all(set(line) == {"model", "created_at", "response", "done"} for line in lines[:-1])
    final = lines[-1]
    assert final["done"] is True and final["response"] == ""
    assert {"done_reason", "total_duration", "load_duration", "prompt_eval_count",
            "prompt_eval_duration", "eval_count", "eval_duration"} <= set(final)
    assert datetime.fromisoformat(final["created_at"].replace("Z", "+00:00")).tzinfo
    single = await api.post("/api/generate", headers=auth, json={
        "model": "tiny-llama", "prompt": "hi", "stream": False, "options": {"num_predict": 3}})
    assert single.headers["Content-Type"].startswith("application/json")
    assert (await single.json())["eval_count"] == 3


async def test_chat_whole_and_streamed(oll: ollama.AsyncClient, tiny_chat: str) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    whole = await oll.chat(model=tiny_chat, messages=messages,
                           options={"num_predict": 5, "temperature": 0})
    assert whole.message.role == "assistant" and whole.message.content
    assert whole.eval_count == 5 and whole.done_reason == "length"
    parts = [p async for p in await oll.chat(model=tiny_chat, messages=messages, stream=True,
                                             options={"num_predict": 5, "temperature": 0})]
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].done and parts[-1].eval_count == 5


async def test_what_is_not_supported_is_a_clear_400(oll: ollama.AsyncClient, api: Any,
                                                   auth: dict[str, str], tiny_chat: str) -> None:
    user = [{"role": "user", "content": "x"}]
    cases = [
        (lambda: oll.generate(model="tiny-llama", prompt="x", images=[b"\x89PNG"]), "images"),
        (lambda: oll.chat(model=tiny_chat, messages=user, tools=[{"type": "function", "function": {
            "name": "no spaces!", "description": "d", "parameters": {"type": "object"}}}]),
         "tools[0].function.name"),
        (lambda: oll.generate(model="tiny-llama", prompt="x", suffix="y"), "suffix"),
        (lambda: oll.generate(model="tiny-llama", prompt="x", template="{{ .Prompt }}"), "template"),
        (lambda: oll.generate(model="tiny-llama", prompt="x", options={"temperature": 99}),
         "options.temperature"),
        (lambda: oll.generate(model="tiny-llama", prompt="x", keep_alive="soon"), "keep_alive"),
        (lambda: oll.chat(model="tiny-llama", messages=user), "chat template"),
    ]
    for call, word in cases:
        with pytest.raises(ollama.ResponseError) as caught:
            await call()
        assert caught.value.status_code == 400, (word, caught.value.error)
        assert word in caught.value.error, caught.value.error
    for body in ({"model": "tiny-llama", "prompt": "x", "top_logprobs": 21, "logprobs": True},
                 {"model": "tiny-llama", "prompt": "x", "top_logprobs": 3},
                 {"model": "tiny-llama", "prompt": 5}, {"prompt": "x"},
                 {"model": "tiny-llama", "prompt": "x", "format": "yaml"},
                 {"model": "tiny-llama", "prompt": "x", "format": {"type": "nonsense"}}):
        answer = await api.post("/api/generate", headers=auth, json=body)
        assert answer.status == 400
        assert set(await answer.json()) == {"error"}
    # think is accepted (no model here thinks) and ignored
    thought = await oll.generate(model="tiny-llama", prompt="x", think=True,
                                 options={"num_predict": 2})
    assert thought.eval_count == 2


async def _loaded(oll: ollama.AsyncClient) -> dict[str, Any]:
    return {m.model: m for m in (await oll.ps()).models}


async def test_keep_alive_empty_prompts_load_and_unload_and_ps_says_until_when(
        oll: ollama.AsyncClient, tiny_chat: str) -> None:
    loaded = await oll.generate(model="tiny-llama", prompt="", keep_alive="1h")
    assert loaded.done and loaded.done_reason == "load" and loaded.response == ""
    ps = await _loaded(oll)
    assert list(ps) == ["tiny-llama:latest"]
    running = ps["tiny-llama:latest"]
    assert running.context_length == 256 and running.size_vram == 0
    assert running.size and running.size > 1_000_000
    left = running.expires_at.timestamp() - time.time()
    assert 3500 < left <= 3600, left
    forever = await oll.chat(model=tiny_chat, messages=[], keep_alive=-1)
    assert forever.done_reason == "load" and forever.message.content == ""
    expiry = (await _loaded(oll))["tiny-chat:latest"].expires_at
    assert expiry.year > datetime.now(timezone.utc).year + 100
    unloaded = await oll.generate(model="tiny-llama", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert list(await _loaded(oll)) == ["tiny-chat:latest"]
    # keep_alive 0 on a real request: the model goes once the answer is out
    answer = await oll.generate(model="tiny-llama", prompt="x", keep_alive="0s",
                                options={"num_predict": 2})
    assert answer.eval_count == 2
    for _ in range(60):
        if "tiny-llama:latest" not in await _loaded(oll):
            break
        await asyncio.sleep(0.1)
    assert list(await _loaded(oll)) == ["tiny-chat:latest"]


async def test_num_ctx_is_the_context_the_model_loads_with(oll: ollama.AsyncClient) -> None:
    await oll.generate(model="tiny-llama", prompt="", options={"num_ctx": 128})
    assert (await _loaded(oll))["tiny-llama:latest"].context_length == 128


async def test_embed_and_the_older_embeddings_route(oll: ollama.AsyncClient, settings: Any) -> None:
    write_tiny_llama(settings.models_path / "tiny-embed.gguf", name="tiny-embed", pooling=True)
    assert (await oll.show("tiny-embed")).capabilities == ["embedding"]
    both = await oll.embed(model="tiny-embed", input=["hello", "world"])
    assert len(both.embeddings) == 2 and len(both.embeddings[0]) == 64
    assert both.embeddings[0] != both.embeddings[1] and both.prompt_eval_count
    one = await oll.embed(model="tiny-embed:latest", input="hello")
    assert one.embeddings == [both.embeddings[0]]
    older = await oll.embeddings(model="tiny-embed", prompt="hello")
    assert list(older.embedding) == pytest.approx(both.embeddings[0])
    pooled = await oll.embed(model="tiny-llama", input="x")  # no pooling type: mean pooling
    assert len(pooled.embeddings) == 1 and len(pooled.embeddings[0]) == 64


async def test_rate_limits_apply_and_answer_in_ollamas_shape(aiohttp_client: Any,
                                                            make_settings: Any) -> None:
    from llamahomed.http.app import create_app
    from llamahomed.http.keys import AUTHORITY

    app = create_app(make_settings(rate_limits={"tiers": {"basic": {"rpm": 6, "burst": 2}}}))
    server = await aiohttp_client(app)
    token = app[AUTHORITY].generator.create_token("alice", scopes=("inference",), tier="basic")
    client = ollama.AsyncClient(host=str(server.make_url("")),
                                headers={"Authorization": f"Bearer {token}"})
    try:
        await client.list()
        await client.list()
        with pytest.raises(ollama.ResponseError) as caught:
            await client.list()
    finally:
        await client.close()
    assert caught.value.status_code == 429 and "too many requests" in caught.value.error
    answer = await server.get("/api/tags", headers={"Authorization": f"Bearer {token}"})
    assert answer.status == 429 and answer.headers["Retry-After"]
    assert set(await answer.json()) == {"error"}


PING = {"type": "function", "function": {"name": "ping", "description": "Ping",
                                         "parameters": {"type": "object", "properties": {}}}}


async def test_tool_choice_extension_forces_a_call_and_format_still_works(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    """The top-level ``tool_choice`` (LlamaHome's extension) forces a call even on the tiny
    random model (the grammar writes it); with ``format`` a forced choice is a 400, an auto one
    keeps the format's grammar."""
    write_tiny_llama(settings.models_path / "tiny-tools.gguf", name="tiny-tools", n_ctx=1024,
                     chat_template=DEFAULT_CHAT_TEMPLATE)
    ask = {"model": "tiny-tools", "messages": [{"role": "user", "content": "x"}], "tools": [PING],
           "stream": False, "options": {"num_predict": 64, "temperature": 0}}
    forced = await (await api.post("/api/chat", headers=auth,
                                   json={**ask, "tool_choice": "ping"})).json()
    assert "message" in forced, forced
    assert forced["message"]["tool_calls"][0]["function"] == {"index": 0, "name": "ping",
                                                               "arguments": {}}
    assert forced["done_reason"] == "stop" and forced["message"]["content"] == ""
    both = await api.post("/api/chat", headers=auth,
                          json={**ask, "tool_choice": "required", "format": "json"})
    assert both.status == 400 and "tool_choice" in (await both.json())["error"]
    schema = {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}
    auto = await (await api.post("/api/chat", headers=auth, json={**ask, "format": schema})).json()
    assert auto["done"] is True
    assert auto["message"].get("tool_calls") or auto["done_reason"] == "length" or isinstance(
        json.loads(auto["message"]["content"])["a"], bool)
