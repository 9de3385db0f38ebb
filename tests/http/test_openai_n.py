"""``n`` choices on the OpenAI routes, through the official ``openai`` SDK against the real app
and SmolLM2: sibling sequences that share the prompt, numbered as OpenAI numbers them."""

from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from llamahomed.http.app import create_app
from llamahomed.http.keys import INFERENCE
from llamahomed.registry.default_model import SMOLLM2_FILE, SMOLLM2_ID
from tests.fixtures.observe import finish_reasons
from tests.fixtures.tiny_gguf import write_tiny_llama

GREEDY = {"temperature": 0, "max_tokens": 16}
MESSAGES: Any = [{"role": "user", "content": "Name a colour."}]

@pytest.fixture
async def sdk(aiohttp_client: Any, make_settings: Any, models_dir: Path,
              smollm2_file: Path) -> AsyncIterator[openai.AsyncOpenAI]:
    os.link(smollm2_file, models_dir / SMOLLM2_FILE)
    # choices are compared with single requests token for token: no speculative drafts, which
    # decode several rows of a sequence in one batch, the quantized kernels' other path where a
    # greedy near-tie can move (README, "Greedy results can differ")
    settings = make_settings(system_settings={"n_ctx": 1024, "speculative": "off"})
    api = await aiohttp_client(create_app(settings))
    client = openai.AsyncOpenAI(base_url=str(api.make_url("/v1")),
                                api_key=settings.admin_token_file.read_text().strip(),
                                max_retries=0)
    yield client
    await client.close()


@pytest.mark.smollm2
async def test_chat_n_gives_n_choices_and_counts_the_prompt_once(
        sdk: openai.AsyncOpenAI) -> None:
    one = await sdk.chat.completions.create(model=SMOLLM2_ID, messages=MESSAGES, **GREEDY)
    three = await sdk.chat.completions.create(model=SMOLLM2_ID, messages=MESSAGES, n=3, **GREEDY)
    assert [c.index for c in three.choices] == [0, 1, 2]
    text = one.choices[0].message.content
    assert text and all(c.message.content == text for c in three.choices)
    assert one.usage is not None and three.usage is not None
    assert three.usage.prompt_tokens == one.usage.prompt_tokens
    assert three.usage.completion_tokens == 3 * one.usage.completion_tokens
    assert three.usage.total_tokens == three.usage.prompt_tokens + three.usage.completion_tokens


@pytest.mark.smollm2
async def test_streamed_chat_n_interleaves_choices_by_index(sdk: openai.AsyncOpenAI) -> None:
    sampled = {"temperature": 0.9, "seed": 7, "max_tokens": 16}
    whole = await sdk.chat.completions.create(model=SMOLLM2_ID, messages=MESSAGES, n=2,
                                              **sampled)
    stream = await sdk.chat.completions.create(
        model=SMOLLM2_ID, messages=MESSAGES, n=2, stream=True,
        stream_options={"include_usage": True}, **sampled)
    texts: dict[int, str] = defaultdict(str)
    finishes: dict[int, list[str]] = defaultdict(list)
    chunks = [chunk async for chunk in stream]
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        texts[choice.index] += choice.delta.content or ""
        if choice.finish_reason:
            finishes[choice.index].append(choice.finish_reason)
    assert sorted(texts) == [0, 1] and all(len(f) == 1 for f in finishes.values())
    # the same seed gives the same choices, streamed or not; seed + i makes them differ
    assert [texts[0], texts[1]] == [c.message.content for c in whole.choices]
    assert texts[0] != texts[1]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and whole.usage is not None
    assert last.usage.model_dump() == whole.usage.model_dump()


@pytest.mark.smollm2
async def test_completions_n_with_prompts_numbers_choices_prompt_major(
        sdk: openai.AsyncOpenAI) -> None:
    prompts = ["The capital of France is", "1, 2, 3,"]
    singles = [await sdk.completions.create(model=SMOLLM2_ID, prompt=p, **GREEDY)
               for p in prompts]
    reply = await sdk.completions.create(model=SMOLLM2_ID, prompt=prompts, n=2, **GREEDY)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    expected = [s.choices[0].text for s in singles for _ in range(2)]
    assert [c.text for c in reply.choices] == expected and expected[0] != expected[2]
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles if s.usage)
    assert reply.usage.completion_tokens == 2 * sum(
        s.usage.completion_tokens for s in singles if s.usage)


@pytest.mark.smollm2
@pytest.mark.parametrize("n", [0, 17])
async def test_n_out_of_range_is_a_400_naming_n(sdk: openai.AsyncOpenAI, n: int) -> None:
    with pytest.raises(openai.BadRequestError) as chat:
        await sdk.chat.completions.create(model=SMOLLM2_ID, messages=MESSAGES, n=n)
    with pytest.raises(openai.BadRequestError) as text:
        await sdk.completions.create(model=SMOLLM2_ID, prompt="x", n=n)
    assert chat.value.param == text.value.param == "n"
    assert chat.value.status_code == text.value.status_code == 400


@pytest.mark.smollm2
async def test_best_of_stays_refused(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.completions.create(model=SMOLLM2_ID, prompt="x", n=2, best_of=2)
    assert refused.value.param == "best_of"


async def test_a_client_leaving_a_streamed_n_request_cancels_every_choice(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    write_tiny_llama(settings.models_path / "tiny-long.gguf", n_ctx=4096, name="tiny-long")
    response = await api.post("/v1/completions", headers=auth, json={
        "model": "tiny-long", "prompt": "the cat", "max_tokens": 1000, "temperature": 0,
        "n": 3, "stream": True})
    seen: set[int] = set()
    while len(seen) < 3:  # every choice has started
        line = await response.content.readline()
        if line.startswith(b"data: "):
            seen.add(json.loads(line[6:])["choices"][0]["index"])
    worker = api.server.app[INFERENCE].pool.workers()["tiny-long"]
    assert worker.in_flight == 3
    response.close()
    for _ in range(100):
        await asyncio.sleep(0.05)
        if worker.in_flight == 0:
            break
    assert finish_reasons(api.server.app, "tiny-long") == {"cancelled": 3}
    assert worker.admission.running == 0
