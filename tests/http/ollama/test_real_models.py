"""The official ``ollama`` client on real models: SmolLM2 (its ChatML template) for chat and
structured output, Gemma 3 270M (a base model) for generate; an error mid-stream."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import ollama
import pytest

from llamahomed.core.errors import ServerBusy
from llamahomed.http.keys import INFERENCE

pytestmark = [pytest.mark.smollm2, pytest.mark.gemma]

SMOLLM2 = "smollm2-135m-instruct"
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer", "minimum": 0}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.fixture
async def real(aiohttp_client: Any, make_settings: Any, smollm2_file: Path, gemma_file: Path,
               tmp_path: Path) -> AsyncIterator[tuple[ollama.AsyncClient, Any]]:
    """The real app serving SmolLM2 and Gemma (n_ctx 1024) and the Ollama client on it."""
    from llamahomed.http.app import create_app

    store = tmp_path / "real-store"
    store.mkdir()
    for path in (smollm2_file, gemma_file):
        os.link(path, store / path.name)
    settings = make_settings(models_dir=store, system_settings={"n_ctx": 1024},
                             model_settings={"default_model": "gemma3-270m"})
    app_client = await aiohttp_client(create_app(settings))
    token = settings.admin_token_file.read_text().strip()
    client = ollama.AsyncClient(host=str(app_client.make_url("")),
                                headers={"Authorization": f"Bearer {token}"})
    yield client, app_client
    await client.close()


async def test_chat_with_smollm2_whole_streamed_and_by_its_names(
        real: tuple[ollama.AsyncClient, Any]) -> None:
    oll, _ = real
    shown = await oll.show("smollm2:135m")  # the catalog's Ollama-style alias
    assert shown.template and "<|im_start|>" in shown.template
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is the capital of France? One word."}]
    whole = await oll.chat(model=f"{SMOLLM2}:latest", messages=messages,
                           options={"temperature": 0, "num_predict": 24})
    assert "paris" in whole.message.content.lower(), whole.message.content  # type: ignore[union-attr]
    assert whole.done_reason in ("stop", "length") and whole.prompt_eval_count
    assert whole.prompt_eval_count > 20  # the template's system and user turns were rendered
    parts = [p async for p in await oll.chat(model=SMOLLM2, messages=messages, stream=True,
                                             options={"temperature": 0, "num_predict": 24})]
    assert len(parts) > 2 and parts[-1].done
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count


async def test_format_json_and_a_schema_constrain_the_answer(
        real: tuple[ollama.AsyncClient, Any]) -> None:
    oll, _ = real
    ask = [{"role": "user", "content": "Describe a person called Ada who is 36, as JSON."}]
    schema = await oll.chat(model=SMOLLM2, messages=ask, format=PERSON,
                            options={"temperature": 0, "num_predict": 60})
    person = json.loads(schema.message.content or "")
    jsonschema.validate(person, PERSON)
    free = await oll.chat(model=SMOLLM2, format="json", messages=[
        {"role": "user", "content": 'Reply with the JSON {"ok": true} and nothing else.'}],
        options={"temperature": 0, "num_predict": 40})
    text = (free.message.content or "").strip()
    assert text.startswith("{")
    if free.done_reason == "stop":  # a JSON grammar may pad with whitespace until the limit
        assert isinstance(json.loads(text), dict)


async def test_generate_with_gemma_raw_and_templated(real: tuple[ollama.AsyncClient, Any]) -> None:
    oll, _ = real
    assert "completion" in (await oll.show("gemma3-270m")).capabilities  # type: ignore[operator]
    raw = await oll.generate(model="gemma3-270m:q4_k_m", prompt="1, 2, 3, 4,", raw=True,
                             options={"temperature": 0, "num_predict": 12, "stop": [" 7"]})
    assert raw.response.startswith(" 5, 6,"), raw.response
    assert raw.done_reason == "stop" and "7" not in raw.response
    with_system = await oll.generate(model="gemma3:270m", prompt="1, 2, 3, 4,",
                                     system="Count on.", options={"num_predict": 1})
    assert with_system.prompt_eval_count and raw.prompt_eval_count
    assert with_system.prompt_eval_count > raw.prompt_eval_count  # the system text was added


async def test_an_error_after_the_first_line_is_a_last_error_line(
        real: tuple[ollama.AsyncClient, Any]) -> None:
    oll, app_client = real
    stream = await oll.generate(model="gemma3-270m", prompt="Once upon a time", raw=True,
                                stream=True, options={"num_predict": 400, "temperature": 1.0})
    first = await stream.__anext__()
    assert first.done is False
    pool = app_client.server.app[INFERENCE].pool
    await pool.abort_all(ServerBusy("the daemon is draining this model for the test"))
    with pytest.raises(ollama.ResponseError) as caught:
        async for _ in stream:
            await asyncio.sleep(0)
    assert "draining this model" in caught.value.error
