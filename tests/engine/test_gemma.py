"""The embedded Gemma 3 270M through the real worker process: real text, repeatable, counted right."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from llamahomed.engine.config import LoadConfig
from llamahomed.engine.handle import WorkerHandle
from llamahomed.engine.protocol import Done, Failed, Text
from llamahomed.engine.protocol import SamplingParams

pytestmark = pytest.mark.gemma
GREEDY = SamplingParams(max_tokens=16, temperature=0.0, top_k=1, repeat_penalty=1.0)


@pytest.fixture
async def worker(gemma_file: Path) -> AsyncIterator[WorkerHandle]:
    handle = WorkerHandle(LoadConfig(model_id="gemma3-270m", model_path=str(gemma_file), n_ctx=2048,
                                     n_batch=512, n_threads=2, n_gpu_layers=0))
    await handle.start(timeout=120)
    yield handle
    await handle.stop()


async def run(worker: WorkerHandle, prompt: str, params: SamplingParams = GREEDY) -> dict[str, Any]:
    stream = await worker.submit(prompt, params)
    text, chunks = [], 0
    async for event in stream.events():
        if isinstance(event, Text):
            text.append(event.text)
            chunks += 1
        elif isinstance(event, Failed):
            raise AssertionError(event)
        elif isinstance(event, Done):
            return {"text": "".join(text), "chunks": chunks, **event.wire()}
    raise AssertionError("no done event")


async def test_gemma_writes_real_text(worker: WorkerHandle) -> None:
    result = await run(worker, "The Eiffel Tower is located in the city of")
    assert "Paris" in result["text"]
    assert result["finish_reason"] in ("length", "stop")


async def test_greedy_decoding_is_repeatable(worker: WorkerHandle) -> None:
    first = await run(worker, "Water boils at a temperature of")
    second = await run(worker, "Water boils at a temperature of")
    assert first["text"] == second["text"] and first["text"].strip()


async def test_token_counts_match_the_tokenizer(worker: WorkerHandle, gemma_file: Path) -> None:
    from llama_cpp import Llama

    prompt = "Count these tokens, please: ünïcödé ☃ 日本語"
    vocab = Llama(model_path=str(gemma_file), vocab_only=True, verbose=False)
    expected = len(vocab.tokenize(prompt.encode(), add_bos=True))
    result = await run(worker, prompt, SamplingParams(max_tokens=8, temperature=0.0, stop=()))
    usage = result["usage"]
    assert usage["prompt_tokens"] == expected
    assert usage["completion_tokens"] == 8 or result["finish_reason"] == "stop"
    assert usage["total_tokens"] == expected + usage["completion_tokens"]


async def test_multibyte_text_streams_in_whole_characters(worker: WorkerHandle) -> None:
    stream = await worker.submit("日本の首都は東京です。大阪は", SamplingParams(max_tokens=24, temperature=0.0))
    pieces = [e.text async for e in stream.events() if isinstance(e, Text)]
    assert any(ord(ch) > 0x3000 for ch in "".join(pieces)), pieces
    assert all("\ufffd" not in piece for piece in pieces)


async def test_several_sequences_in_flight_all_complete(worker: WorkerHandle) -> None:
    prompts = ["One, two, three,", "Red, green,", "Monday, Tuesday,"]
    results = await asyncio.gather(*(run(worker, p) for p in prompts))
    alone = [await run(worker, p) for p in prompts]
    assert [r["text"] for r in results] == [a["text"] for a in alone]
