"""Chat out of the box: requests without a model go to the embedded SmolLM2 (real chat through the
official ``openai`` SDK), and native prompts go through a model's chat template unless raw."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from llamahomed.http.app import create_app
from llamahomed.registry.default_model import SMOLLM2_FILE, SMOLLM2_ID
from tests.conftest import TINY_MODEL_ID
from tests.fixtures.tiny_gguf import DEFAULT_CHAT_TEMPLATE, write_tiny_llama
from tests.fixtures.http import post

GREEDY = {"temperature": 0, "max_tokens": 24}


def chatml(*turns: tuple[str, str]) -> str:
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
    return text + "<|im_start|>assistant\n"


@pytest.fixture
def chat_store(models_dir: Path, smollm2_file: Path) -> Path:
    """The tiny base model and SmolLM2 (hard-linked) in one store."""
    os.link(smollm2_file, models_dir / SMOLLM2_FILE)
    return models_dir


@pytest.fixture
def chat_settings(make_settings: Any, chat_store: Path) -> Any:
    """The tiny base model as default model; default_chat_model left at its default."""
    return make_settings(system_settings={"n_ctx": 1024})


@pytest.fixture
async def chat_api(aiohttp_client: Any, chat_settings: Any) -> Any:
    return await aiohttp_client(create_app(chat_settings))


@pytest.fixture
def headers(chat_api: Any, chat_settings: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {chat_settings.admin_token_file.read_text().strip()}"}


@pytest.fixture
async def sdk(chat_api: Any, headers: dict[str, str]) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=str(chat_api.make_url("/v1")),
                                api_key=headers["Authorization"].removeprefix("Bearer "),
                                max_retries=0)
    yield client
    await client.close()


@pytest.mark.smollm2
async def test_chat_without_a_model_is_answered_by_smollm2(sdk: openai.AsyncOpenAI) -> None:
    # the SDK insists on a `model` argument; openai.omit leaves it out of the request body
    reply = await sdk.chat.completions.create(
        model=openai.omit, messages=[{"role": "user", "content": "What is the capital of France?"}],
        **GREEDY)  # type: ignore[call-overload]
    assert reply.model == SMOLLM2_ID
    (choice,) = reply.choices
    assert choice.finish_reason in ("stop", "length")
    assert "Paris" in (choice.message.content or "")
    stream = await sdk.chat.completions.create(
        model=openai.omit, messages=[{"role": "user", "content": "What is the capital of France?"}], stream=True,
        **GREEDY)  # type: ignore[call-overload]
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == choice.message.content


@pytest.mark.smollm2
async def test_native_prompts_on_smollm2_go_through_its_template(
        chat_api: Any, headers: dict[str, str]) -> None:
    question = "What is the capital of France?"
    templated = await post(chat_api, headers, "/api/v1/process",
                           {"model": "smollm2", "prompt": question, **GREEDY})
    raw = await post(chat_api, headers, "/api/v1/process",
                     {"model": "smollm2", "prompt": question, "raw": True, **GREEDY})
    assert templated["usage"]["prompt_tokens"] > raw["usage"]["prompt_tokens"]
    assert "Paris" in templated["text"]
    # the template's own default system message, spelled out by hand, is the same prompt
    by_hand = chatml(("system", "You are a helpful AI assistant named SmolLM, trained by "
                                "Hugging Face"), ("user", question))
    counted = await post(chat_api, headers, "/tokenize", {"content": by_hand, "model": "smollm2",
                                                          "add_special": True})
    assert templated["usage"]["prompt_tokens"] == len(counted["tokens"])


@pytest.mark.smollm2
async def test_system_reaches_the_template(chat_api: Any, headers: dict[str, str]) -> None:
    system, question = "You answer in French only.", "Say hello."
    done = await post(chat_api, headers, "/api/v1/process",
                      {"model": "smollm2", "prompt": question, "system": system, **GREEDY})
    counted = await post(chat_api, headers, "/tokenize", {
        "content": chatml(("system", system), ("user", question)), "model": "smollm2",
        "add_special": True})
    assert done["usage"]["prompt_tokens"] == len(counted["tokens"])
    lines = await chat_api.post("/api/v1/stream", headers=headers, json={
        "model": "smollm2", "prompt": question, "system": system, **GREEDY})
    final = [line for line in (await lines.text()).splitlines() if '"done": true' in line
             or '"done":true' in line]
    assert final and str(done["usage"]["prompt_tokens"]) in final[-1]


@pytest.mark.smollm2
async def test_batch_prompts_are_templated_too(chat_api: Any, headers: dict[str, str]) -> None:
    body = {"model": "smollm2", "prompts": ["Hi.", "Hi."], "max_tokens": 2, "temperature": 0}
    templated = (await post(chat_api, headers, "/api/v1/batch", body))["results"]
    raw = (await post(chat_api, headers, "/api/v1/batch", {**body, "raw": True}))["results"]
    assert templated[0]["usage"]["prompt_tokens"] > raw[0]["usage"]["prompt_tokens"]


@pytest.mark.smollm2
async def test_smollm2_spells_its_special_tokens(chat_api: Any, headers: dict[str, str]) -> None:
    body = {"content": "<|im_start|>", "model": "smollm2"}
    parsed = (await post(chat_api, headers, "/tokenize", body))["tokens"]
    literal = (await post(chat_api, headers, "/tokenize", {**body, "parse_special": False}))["tokens"]
    assert len(parsed) == 1 and len(literal) > 1
    assert await post(chat_api, headers, "/detokenize",
                      {"tokens": parsed, "model": "smollm2"}) == {"content": "<|im_start|>"}


@pytest.mark.smollm2
async def test_raw_with_system_is_refused(chat_api: Any, headers: dict[str, str]) -> None:
    data = await post(chat_api, headers, "/api/v1/process",
                      {"model": "smollm2", "prompt": "x", "raw": True, "system": "s"}, 422)
    assert data["error"]["code"] == "validation_error"
    assert "raw" in data["error"]["message"] or "raw" in str(data["error"]["details"])


# ---- base models keep raw prompts (the tiny model has no template): no SmolLM2 needed

async def test_a_base_model_keeps_the_prompt_verbatim(api: Any, auth: dict[str, str]) -> None:
    prompt = "one two three"
    counted = await post(api, auth, "/tokenize", {"content": prompt, "add_special": True})
    done = await post(api, auth, "/api/v1/process", {"prompt": prompt, "max_tokens": 1})
    assert done["usage"]["prompt_tokens"] == len(counted["tokens"])
    same = await post(api, auth, "/api/v1/process", {"prompt": prompt, "max_tokens": 1,
                                                     "raw": True})
    assert same["usage"] == done["usage"]


async def test_system_on_a_base_model_comes_first_with_a_blank_line(api: Any,
                                                                    auth: dict[str, str]) -> None:
    system, prompt = "A story.", "Once upon a time"
    counted = await post(api, auth, "/tokenize", {"content": f"{system}\n\n{prompt}",
                                                  "add_special": True})
    done = await post(api, auth, "/api/v1/process", {"prompt": prompt, "system": system,
                                                     "max_tokens": 1})
    assert done["usage"]["prompt_tokens"] == len(counted["tokens"])


async def test_a_templated_tiny_model_renders_native_prompts(api: Any, auth: dict[str, str],
                                                             settings: Any) -> None:
    write_tiny_llama(settings.models_path / "tiny-chat.gguf", name="tiny-chat",
                     chat_template=DEFAULT_CHAT_TEMPLATE)
    body = {"model": "tiny-chat", "prompt": "hello", "max_tokens": 4, "temperature": 0}
    templated = await post(api, auth, "/api/v1/process", body)
    by_hand = await post(api, auth, "/api/v1/process",
                         {**body, "prompt": chatml(("user", "hello")), "raw": True})
    assert templated["usage"] == by_hand["usage"] and templated["text"] == by_hand["text"]


async def test_chat_default_missing_and_a_base_default_model_says_how_to_get_it(
        api: Any, auth: dict[str, str]) -> None:
    data = await post(api, auth, "/v1/chat/completions",
                      {"messages": [{"role": "user", "content": "hi"}]}, 404)
    assert data["error"]["code"] == "model_not_found"
    assert "default_chat_model" in data["error"]["message"]
    assert "smollm2-135m-instruct" in data["error"]["message"]


async def test_chat_default_missing_falls_back_to_a_templated_default_model(
        aiohttp_client: Any, make_settings: Any, models_dir: Path) -> None:
    write_tiny_llama(models_dir / "tiny-chat.gguf", name="tiny-chat",
                     chat_template=DEFAULT_CHAT_TEMPLATE)
    settings = make_settings(model_settings={"default_model": "tiny-chat"})
    client = await aiohttp_client(create_app(settings))
    auth = {"Authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}
    data = await post(client, auth, "/v1/chat/completions",
                      {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert data["model"] == "tiny-chat"


async def test_an_empty_chat_default_means_the_default_model(
        aiohttp_client: Any, make_settings: Any) -> None:
    settings = make_settings(model_settings={"default_chat_model": ""})
    client = await aiohttp_client(create_app(settings))
    auth = {"Authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}
    data = await post(client, auth, "/v1/chat/completions",
                      {"messages": [{"role": "user", "content": "hi"}]}, 400)
    assert "no chat template" in data["error"]["message"]
    assert TINY_MODEL_ID in data["error"]["message"]


@pytest.mark.smollm2
async def test_the_websocket_templates_prompts_and_takes_system(chat_api: Any,
                                                                headers: dict[str, str]) -> None:
    body = {"model": "smollm2", "prompt": "Say hi.", "max_tokens": 2, "temperature": 0}
    over_http = await post(chat_api, headers, "/api/v1/process", {**body, "system": "Be terse."})
    async with chat_api.ws_connect("/api/v1/ws", headers=headers) as ws:
        await ws.send_json({"id": "s", **body, "system": "Be terse."})
        await ws.send_json({"id": "r", **body, "raw": True})
        finals: dict[str, dict[str, Any]] = {}
        while len(finals) < 2:
            message = await ws.receive_json(timeout=60)
            if message.get("done") or message.get("error"):
                finals[message["id"]] = message
    assert finals["s"]["usage"]["prompt_tokens"] == over_http["usage"]["prompt_tokens"]
    assert finals["r"]["usage"]["prompt_tokens"] < finals["s"]["usage"]["prompt_tokens"]
