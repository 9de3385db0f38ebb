"""Every Python example of the API guide's Quick Start, Streaming, Integration Patterns, Error
Handling and Best Practices sections, as written, against a real ``llamahomed`` process.

The daemon serves the tiny model under the file name ``llama3.3.gguf``, so the guide's
``model="llama3.3"`` names an installed model. Only the guide's placeholders change: the API key
and endpoint are the test daemon's, and ``process_chunk`` / ``get_current_user`` (which the guide
leaves undefined) are defined here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.fixtures.daemon import RunningDaemon, dirs_env, start_daemon
from tests.fixtures.tiny_gguf import write_tiny_llama

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("guide")
    store = root / "models"
    store.mkdir()
    # The tiny model with a 2048-token context: the guide's 100-token defaults, three or twelve
    # at once, fit the slots' shared KV cache.
    write_tiny_llama(store / "llama3.3.gguf", n_ctx=2048)
    with start_daemon(root, dirs_env(root, store, "llama3.3")) as running:
        yield running


@pytest.fixture
def env(daemon: RunningDaemon, monkeypatch: pytest.MonkeyPatch) -> RunningDaemon:
    for key, value in daemon.client_env().items():
        monkeypatch.setenv(key, value)
    return daemon


# -- Quick Start ------------------------------------------------------------------------------

async def test_quick_start_authentication_and_simple_request(env: RunningDaemon) -> None:
    from llamahome.client import APIClient

    client = APIClient(
        api_key=env.token,
        endpoint=env.endpoint,
    )
    response = await client.process_prompt(
        prompt="Summarize this text",
        model="llama3.3",
        max_tokens=100,
    )
    print(response.text)
    assert response.usage.completion_tokens == 100  # the tiny model never stops early
    assert response.model == "llama3.3"  # the installed file llama3.3.gguf
    assert response.created.endswith("Z")


async def test_quick_start_streaming_and_batch(env: RunningDaemon) -> None:
    from llamahome.client import APIClient

    client = APIClient(api_key=env.token, endpoint=env.endpoint)
    pieces = []
    async for chunk in client.stream_response(
        prompt="Generate a story",
        model="llama3.3",
    ):
        print(chunk.text, end="", flush=True)
        pieces.append(chunk.text)
    whole = await client.process_prompt("Generate a story", model="llama3.3", temperature=0)
    greedy = [c.text async for c in client.stream_response("Generate a story", "llama3.3",
                                                           temperature=0)]
    assert len(pieces) >= 1 and "".join(greedy) == whole.text

    results = await client.process_batch(
        prompts=["Query 1", "Query 2", "Query 3"],
        model="llama3.3",
        batch_size=3,
    )
    assert [r.usage.completion_tokens for r in results] == [100, 100, 100]


# -- Integration Patterns -------------------------------------------------------------------

async def test_integration_python_client_custom_client_runs_as_written(env: RunningDaemon) -> None:
    from llamahome.client import LlamaClient

    class CustomClient:
        def __init__(self, api_key: str):
            self.client = LlamaClient(api_key=api_key)

        async def process_with_retry(
            self,
            prompt: str,
            max_retries: int = 3
        ) -> str:
            """Process prompt with retry logic."""
            for attempt in range(max_retries):
                try:
                    response = await self.client.process(prompt)
                    return response.text
                except Exception:
                    if attempt == max_retries - 1:
                        raise
                    await asyncio.sleep(2 ** attempt)
            raise AssertionError("unreachable")

    text = await CustomClient(api_key=env.token).process_with_retry("Hello")
    assert isinstance(text, str) and text
    from llamahome.error import AuthenticationError

    with pytest.raises(AuthenticationError):
        await CustomClient(api_key="not-a-token").process_with_retry("Hello", max_retries=1)


# -- Error Handling -------------------------------------------------------------------------

async def test_error_types_come_from_the_real_daemon(env: RunningDaemon) -> None:
    from llamahome.client import APIClient
    from llamahome.error import APIError, AuthenticationError, RateLimitError

    assert issubclass(RateLimitError, APIError) and issubclass(AuthenticationError, APIError)
    error = APIError("Too many requests", "rate_limit_exceeded")
    assert (error.message, error.code) == ("Too many requests", "rate_limit_exceeded")

    with pytest.raises(AuthenticationError) as auth:
        await APIClient(api_key="wrong").process_prompt("Hello")
    assert auth.value.status == 401 and auth.value.code == "authentication_error"
    with pytest.raises(APIError) as missing:
        await APIClient().process_prompt("Hello", model="no-such-model")
    assert missing.value.code == "model_not_found" and missing.value.status == 404
    assert missing.value.request_id  # the daemon's x-request-id, for its log


async def test_error_recovery_retry_handler_and_circuit_breaker_on_the_happy_path(
    env: RunningDaemon,
) -> None:
    from llamahome.client import APIClient
    from llamahome.error import CircuitBreaker, RetryHandler

    handler = RetryHandler(
        max_retries=3,
        backoff_factor=2
    )
    breaker = CircuitBreaker(
        failure_threshold=5,
        reset_timeout=300
    )
    client = APIClient(retry=handler, circuit_breaker=breaker)
    response = await client.process_prompt("Hello", max_tokens=4)
    assert response.usage.completion_tokens == 4
    assert breaker.state == "closed" and breaker.failures == 0
    # Standalone, around any call:
    again = await handler.run(lambda: client.process_prompt("Hello", max_tokens=2), breaker=breaker)
    assert again.usage.completion_tokens == 2
    # 4xx replies show the daemon is up: they never open the breaker.
    from llamahome.error import InvalidRequestError

    for _ in range(6):
        with pytest.raises(InvalidRequestError):
            await client.process_prompt("Hello", max_tokens=0)
    assert breaker.state == "closed"


# -- Best Practices -------------------------------------------------------------------------

async def test_best_practices_request_optimization_and_resource_management(
    env: RunningDaemon,
) -> None:
    from llamahome.client import APIClient

    client = APIClient()
    prompt = "Hello"
    # Good: Batch related requests
    results = await client.batch_process([
        "Query 1",
        "Query 2",
        "Query 3"
    ])
    # Bad: Multiple individual requests
    result1 = await client.process("Query 1")
    result2 = await client.process("Query 2")
    result3 = await client.process("Query 3")
    assert len(results) == 3 and all(r.text for r in (result1, result2, result3))

    # Good: Use context managers
    async with client.session() as session:
        result = await session.process(prompt)
    assert result.usage.completion_tokens == 100
    # Bad: Manual resource management
    session = await client.create_session()
    result = await session.process(prompt)
    await session.close()
    assert result.text


async def test_best_practices_connection_pooling_and_response_streaming(env: RunningDaemon) -> None:
    from llamahome.client import PooledClient

    client = PooledClient(
        pool_size=10,
        max_retries=3
    )
    prompt = "Once upon a time"
    received: list[str] = []

    def process_chunk(chunk: object) -> None:
        received.append(chunk.text)  # type: ignore[attr-defined]

    async for chunk in client.stream_response(
        prompt,
        chunk_size=1000
    ):
        process_chunk(chunk)
    assert len(received) >= 1
    # Twelve at once through at most ten connections; each gets its own answer.
    answers = await asyncio.gather(*(client.process(prompt, max_tokens=3) for _ in range(12)))
    assert [a.usage.completion_tokens for a in answers] == [3] * 12
    await client.close()


def test_the_sync_client_has_the_same_methods_for_scripts(env: RunningDaemon) -> None:
    from llamahome.client import SyncClient

    with SyncClient() as client:
        response = client.process_prompt("Hello", max_tokens=5, temperature=0)
        streamed = "".join(c.text for c in client.stream_response("Hello", max_tokens=5,
                                                                 temperature=0))
        assert streamed == response.text and response.usage.completion_tokens == 5
        assert [r.usage.completion_tokens for r in client.process_batch(["a", "b"], max_tokens=2)] \
            == [2, 2]
        models = client.list_models()
        assert models[0].context_length == 2048
        assert client.get_model(models[0].id).id == models[0].id
        before = client.get_config()["model_settings"]["max_tokens"]
        after = client.update_config({"model_settings": {"max_tokens": before + 1}})
        assert after["model_settings"]["max_tokens"] == before + 1
        client.update_config({"model_settings": {"max_tokens": before}})
        assert client.health()["status"] == "ok"


async def test_models_and_config_through_the_async_client(env: RunningDaemon) -> None:
    from llamahome.client import APIClient

    client = APIClient()
    models = await client.list_models()
    assert [m.id for m in models] == [models[0].id] and models[0].context_length == 2048
    detail = await client.get_model("llama3.3")
    assert detail.id == models[0].id and detail.performance is not None
    config = await client.get_config()
    assert set(config) >= {"model_settings", "system_settings"}
    updated = await client.update_config({"model_settings": {"temperature": 0.5}})
    assert updated["model_settings"]["temperature"] == 0.5
    await client.update_config({"model_settings": {"temperature": 0.7}})
