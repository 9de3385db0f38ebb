"""Fixtures the HTTP tests share: a tiny model with a chat template, the OpenAI SDK on /v1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.fixtures.tiny_gguf import DEFAULT_CHAT_TEMPLATE, write_tiny_llama

CHAT_MODEL = "tiny-chat"


@pytest.fixture
def chat_model(settings: Any) -> str:
    """The tiny model with a ChatML template, in the test store."""
    write_tiny_llama(settings.models_path / "tiny-chat.gguf", name=CHAT_MODEL,
                     chat_template=DEFAULT_CHAT_TEMPLATE)
    return CHAT_MODEL


@pytest.fixture
async def client(api: Any, auth: dict[str, str]) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official OpenAI SDK pointed at the app's /v1 with the admin token."""
    token = auth["Authorization"].removeprefix("Bearer ")
    sdk = openai.AsyncOpenAI(base_url=str(api.make_url("/v1")), api_key=token, max_retries=0)
    yield sdk
    await sdk.close()
