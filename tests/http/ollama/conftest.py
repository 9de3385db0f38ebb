"""Fixtures for the Ollama API tests: the official ``ollama`` client on the real app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ollama
import pytest


@pytest.fixture
def settings(make_settings: Any) -> Any:
    """The test file server listens on loopback: the pull policy needs it named."""
    return make_settings(system_settings={"pull_allowed_hosts": ["127.0.0.1"]})


def inference_token(settings: Any, user: str = "bob") -> dict[str, str]:
    """Headers with a token that has the inference scope only (no model management)."""
    from llamahomed.core.authority import Authority

    token = Authority.from_settings(settings).generator.create_token(
        user_id=user, expires_in=300, scopes=("inference",))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def oll(api: Any, auth: dict[str, str]) -> AsyncIterator[ollama.AsyncClient]:
    """The official, unmodified Ollama client pointed at the app with the admin token, the way
    a user would: ``AsyncClient(host=..., headers={"Authorization": "Bearer ..."})``."""
    client = ollama.AsyncClient(host=str(api.make_url("")), headers=auth)
    yield client
    await client.close()
