"""llamahome.server.LlamaServer: the daemon's engine in-process, through real llama.cpp workers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from llamahome import error as errors
from llamahome.server import LlamaServer
from llamahome.types import ProcessResponse

from tests.conftest import TINY_MODEL_ID


@pytest.fixture
async def llama(engine_env: Path) -> AsyncIterator[LlamaServer]:
    async with LlamaServer() as server:
        yield server


async def test_process_stream_and_batch_use_the_real_engine(llama: LlamaServer) -> None:
    response = await llama.process("Hello there", max_tokens=12, temperature=0)
    assert isinstance(response, ProcessResponse)
    assert response.model == TINY_MODEL_ID and response.finish_reason == "length"
    assert response.usage.completion_tokens == 12 and response.usage.prompt_tokens > 0
    pieces = [chunk async for chunk in llama.stream("Hello there", max_tokens=12, temperature=0)]
    assert "".join(c.text for c in pieces) == response.text
    assert [c.index for c in pieces] == list(range(len(pieces)))
    batch = await llama.process_batch(["One", "Two", "Three"], max_tokens=4, temperature=0)
    assert [r.usage.completion_tokens for r in batch] == [4, 4, 4]
    assert batch[0].text == (await llama.process("One", max_tokens=4, temperature=0)).text
    models = await llama.list_models()
    assert [m.id for m in models] == [TINY_MODEL_ID] and models[0].loaded is True


async def test_errors_are_the_clients_classes(llama: LlamaServer) -> None:
    with pytest.raises(errors.ModelNotFoundError) as missing:
        await llama.process("Hi", model="no-such-model")
    assert missing.value.status == 404 and "available" in missing.value.details
    with pytest.raises(errors.InvalidRequestError) as invalid:
        await llama.process("Hi", max_tokens=0)
    assert invalid.value.code == "validation_error"
    assert invalid.value.details["errors"][0]["field"] == "max_tokens"
    with pytest.raises(errors.ContextLengthExceededError):
        await llama.process("word " * 400, max_tokens=4)


async def test_closing_a_stream_early_cancels_the_sequence(llama: LlamaServer) -> None:
    stream = llama.stream("Hello", max_tokens=200, temperature=0)
    first = await stream.__anext__()
    await stream.aclose()  # type: ignore[attr-defined]
    assert first.index == 0
    # The slot is free again: a full-length request still fits and finishes.
    done = await llama.process("Hello", max_tokens=50, temperature=0)
    assert done.usage.completion_tokens == 50


async def test_close_stops_the_workers_and_a_closed_server_starts_again(engine_env: Path) -> None:
    server = LlamaServer()
    await server.process("Hi", max_tokens=2)
    service = server._engine.service
    assert service is not None
    worker = service.pool.workers()[TINY_MODEL_ID]
    await server.close()
    assert not worker.alive
    again = await server.process("Hi", max_tokens=2)
    assert again.usage.completion_tokens == 2
    await server.close()


def test_without_llamahomed_the_constructor_says_what_to_install(tmp_path: Path) -> None:
    script = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("llamahomed", "llama_cpp"):
            raise ImportError("blocked")
sys.meta_path.insert(0, Blocker())
import llamahome.server
try:
    llamahome.server.LlamaServer()
except ImportError as exc:
    print(exc)
"""
    env = {**os.environ, "LLAMAHOME_STATE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, env=env, check=True)
    assert "pip install 'llamahome[server]'" in result.stdout and "APIClient" in result.stdout
