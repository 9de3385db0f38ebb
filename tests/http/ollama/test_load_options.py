"""Ollama's load-time ``options`` (``num_thread``, ``num_gpu``, ``num_batch``) reach the planner
and the worker's load, and a loaded model that differs reloads only for an admin token."""

from __future__ import annotations

from typing import Any

import ollama
import pytest

from llamahomed.http.keys import INFERENCE
from tests.http.ollama.conftest import inference_token


def loaded(api: Any) -> Any:
    return api.server.app[INFERENCE].pool.workers()["tiny-llama"]


async def test_load_options_reach_the_worker(api: Any, oll: ollama.AsyncClient) -> None:
    await oll.generate(model="tiny-llama", prompt="the cat",
                       options={"num_predict": 2, "num_thread": 1, "num_batch": 64, "num_gpu": 0})
    worker = loaded(api)
    assert (worker.config.n_threads, worker.config.n_batch, worker.config.n_gpu_layers) == (1, 64, 0)
    assert worker.info["n_threads"] == 1  # what llama.cpp's context was created with
    first = worker.pid
    await oll.generate(model="tiny-llama", prompt="the cat",
                       options={"num_predict": 2, "num_thread": 1})
    assert loaded(api).pid == first  # the same ask: no reload
    await oll.generate(model="tiny-llama", prompt="the cat", options={"num_predict": 2})
    assert loaded(api).pid == first  # nothing asked: whatever is loaded serves
    await oll.chat(model="tiny-llama", messages=[], options={"num_thread": 2})  # an admin: reload
    assert loaded(api).config.n_threads == 2 and loaded(api).pid != first


async def test_another_load_is_refused_to_a_plain_token(api: Any, settings: Any,
                                                        oll: ollama.AsyncClient) -> None:
    await oll.generate(model="tiny-llama", prompt="the cat",
                       options={"num_predict": 2, "num_thread": 2})
    bob = ollama.AsyncClient(host=str(api.make_url("")), headers=inference_token(settings))
    try:
        with pytest.raises(ollama.ResponseError) as caught:
            await bob.generate(model="tiny-llama", prompt="the cat",
                               options={"num_predict": 2, "num_thread": 1})
        assert caught.value.status_code == 403 and "n_threads" in caught.value.error
        answer = await bob.generate(model="tiny-llama", prompt="the cat",
                                    options={"num_predict": 2, "num_thread": 2, "num_gpu": -1})
        assert answer.eval_count == 2  # what is loaded, or left to the planner: served
    finally:
        await bob.close()
    assert loaded(api).config.n_threads == 2
