"""process / stream / batch through the real app, real worker processes and real llama.cpp."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.conftest import TINY_MODEL_ID

GREEDY = {"temperature": 0, "max_tokens": 12}


async def process(api: Any, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await api.post("/api/v1/process", json=body, headers=auth)
    data: dict[str, Any] = await response.json()
    assert response.status == 200, data
    return data


async def stream_lines(api: Any, auth: dict[str, str], **body: Any) -> list[dict[str, Any]]:
    response = await api.post("/api/v1/stream", json=body, headers=auth)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    text = await response.text()
    return [json.loads(line) for line in text.splitlines() if line]


async def test_process_returns_the_guides_fields_with_real_text(api: Any, auth: dict[str, str],
                                                                tiny_model_file: Any) -> None:
    from llama_cpp import Llama

    data = await process(api, auth, prompt="the cat sat on", **GREEDY)
    assert set(data) - {"cache"} == {"text", "usage", "model", "created", "finish_reason"}
    assert data["model"] == TINY_MODEL_ID
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["created"])
    vocab = Llama(model_path=str(tiny_model_file), vocab_only=True, verbose=False)
    assert data["usage"]["prompt_tokens"] == len(vocab.tokenize(b"the cat sat on"))
    usage = data["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert data["finish_reason"] in ("length", "stop")
    if data["finish_reason"] == "length":
        assert usage["completion_tokens"] == 12
    assert data["text"]


async def test_greedy_decoding_is_repeatable(api: Any, auth: dict[str, str]) -> None:
    first = await process(api, auth, prompt="a dog and a", **GREEDY)
    second = await process(api, auth, prompt="a dog and a", **GREEDY)
    assert first["text"] == second["text"]


async def test_a_seed_makes_sampling_repeatable(api: Any, auth: dict[str, str]) -> None:
    body = {"prompt": "the sun", "temperature": 1.5, "top_k": 0, "top_p": 1.0,
            "max_tokens": 16, "seed": 1234}
    runs = [(await process(api, auth, **body))["text"] for _ in range(2)]
    assert runs[0] == runs[1]


async def test_stream_chunks_concatenate_to_the_process_text(api: Any, auth: dict[str, str]) -> None:
    expected = await process(api, auth, prompt="in the house", **GREEDY)
    lines = await stream_lines(api, auth, prompt="in the house", **GREEDY)
    *chunks, final = lines
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert all(set(c) == {"chunk", "index"} and c["chunk"] for c in chunks)
    assert "".join(c["chunk"] for c in chunks) == expected["text"]
    assert final["done"] is True
    assert final["usage"] == expected["usage"]
    assert final["finish_reason"] == expected["finish_reason"]


async def test_process_with_stream_true_streams_ndjson(api: Any, auth: dict[str, str]) -> None:
    response = await api.post("/api/v1/process", headers=auth,
                              json={"prompt": "hello", "stream": True, **GREEDY})
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in (await response.text()).splitlines()]
    assert lines[-1]["done"] is True and "chunk" in lines[0]


async def test_stop_string_ends_the_text_before_it(api: Any, auth: dict[str, str]) -> None:
    free = await process(api, auth, prompt="one two", temperature=0, max_tokens=24)
    text = free["text"]
    assert len(text) > 6
    stop = text[len(text) // 2: len(text) // 2 + 3]
    cut = await process(api, auth, prompt="one two", temperature=0, max_tokens=24, stop=[stop])
    assert cut["text"] == text[: text.index(stop)]
    assert cut["finish_reason"] == "stop"


async def test_a_prompt_longer_than_the_context_is_refused_not_truncated(
        api: Any, auth: dict[str, str]) -> None:
    long_prompt = "the cat " * 400  # the tiny model is loaded with a 256-token context
    for path in ("/api/v1/process", "/api/v1/stream"):
        response = await api.post(path, json={"prompt": long_prompt}, headers=auth)
        body = await response.json()
        assert response.status == 400
        assert body["error"]["code"] == "context_length_exceeded"
        assert body["error"]["details"]["context_length"] == 256
        assert body["error"]["details"]["prompt_tokens"] > 256


async def test_generation_stops_at_the_context_end(api: Any, auth: dict[str, str]) -> None:
    data = await process(api, auth, prompt="the cat " * 30, temperature=0, max_tokens=4000)
    usage = data["usage"]
    assert data["finish_reason"] in ("length", "stop")
    assert usage["total_tokens"] <= 256


async def test_batch_returns_results_in_order_with_per_item_errors(
        api: Any, auth: dict[str, str]) -> None:
    prompts = ["the cat", "the cat " * 400, "a dog"]
    response = await api.post("/api/v1/batch", headers=auth, json={"prompts": prompts, **GREEDY})
    assert response.status == 200
    results = (await response.json())["results"]
    assert len(results) == 3
    assert results[1]["error"]["code"] == "context_length_exceeded"
    for i in (0, 2):
        alone = await process(api, auth, prompt=prompts[i], **GREEDY)
        assert results[i]["text"] == alone["text"]
        assert results[i]["usage"] == alone["usage"]


async def test_models_list_and_detail(api: Any, auth: dict[str, str]) -> None:
    listing = await (await api.get("/api/v1/models", headers=auth)).json()
    (model,) = listing["models"]
    for key in ("id", "name", "version", "parameters", "context_length"):
        assert key in model
    assert model["id"] == TINY_MODEL_ID and model["context_length"] == 256
    detail = await (await api.get(f"/api/v1/models/{TINY_MODEL_ID}", headers=auth)).json()
    assert detail["capabilities"][0] == "text-generation"
    assert detail["performance"]["tokens_per_second"] is None
    assert re.fullmatch(r"[\d.]+[KMGT]?B", detail["performance"]["memory_required"])
    assert detail["loaded"] is False
    await process(api, auth, prompt="the cat", temperature=0, max_tokens=16)
    detail = await (await api.get(f"/api/v1/models/{TINY_MODEL_ID}", headers=auth)).json()
    assert detail["loaded"] is True
    speed = detail["performance"]["tokens_per_second"]
    assert speed is None or speed > 0  # measured only when >= 4 tokens were generated


@pytest.mark.parametrize("alias", ["tiny-llama:f32", "TINY-LLAMA", "tiny-llama.gguf"])
async def test_a_model_can_be_named_by_variant_or_file(api: Any, auth: dict[str, str], alias: str) -> None:
    data = await process(api, auth, prompt="hi", model=alias, max_tokens=2)
    assert data["model"] == TINY_MODEL_ID


async def test_a_repeated_prompt_reuses_the_prompt_cache(api: Any, auth: dict[str, str]) -> None:
    prompt = "the cat sat on the mat and the dog sat on the log " * 3
    first = await process(api, auth, prompt=prompt, **GREEDY)
    lines = await stream_lines(api, auth, prompt=prompt, **GREEDY)
    final = lines[-1]
    assert first["cache"]["hit_tokens"] == 0
    assert final["cache"]["hit_tokens"] > first["usage"]["prompt_tokens"] // 2
    assert "".join(x["chunk"] for x in lines[:-1]) == first["text"]


async def test_an_evicted_prompt_comes_back_from_the_ram_cache(api: Any, auth: dict[str, str]) -> None:
    """With one slot, prompts A, B, A: A's prefix is restored from RAM (``cache_size``)."""
    response = await api.post("/api/v1/config", headers=auth, json={
        "system_settings": {"n_slots": 1, "cache_size": "64MB"}})
    assert response.status == 200, await response.text()
    a, b = "the cat sat on the mat and the dog sat on the log " * 4, "one two three four five " * 8
    first = await process(api, auth, prompt=a, **GREEDY)
    await process(api, auth, prompt=b, **GREEDY)
    again = await process(api, auth, prompt=a, **GREEDY)
    assert again["cache"] == {"hit_tokens": first["usage"]["prompt_tokens"] - 1, "source": "ram"}
    assert again["text"] == first["text"]
