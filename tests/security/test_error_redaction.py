"""Errors name no filesystem paths to tokens without the admin scope; admins see the detail."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from llamahomed.http.app import create_app
from tests.security.helpers import assert_envelope, bearer, issue


def unloadable_copy(tiny_model_file: Path, target: Path) -> Path:
    """The tiny model with an unknown tokenizer: its header parses, llama.cpp refuses it."""
    data = tiny_model_file.read_bytes()
    key = b"tokenizer.ggml.model" + struct.pack("<IQ", 8, 5) + b"llama"
    assert data.count(key) == 1
    target.write_bytes(data.replace(key, key[:-5] + b"nosuc"))
    return target


async def test_a_load_failure_shows_paths_to_admins_only(
        aiohttp_client: Any, make_settings: Any, models_dir: Path, tiny_model_file: Path) -> None:
    unloadable_copy(tiny_model_file, models_dir / "broken.gguf")
    settings = make_settings()
    client = await aiohttp_client(create_app(settings))
    user = bearer(issue(settings, "bob", scopes=("inference",)))
    admin = bearer(settings.admin_token_file.read_text().strip())
    prompt = {"model": "broken", "prompt": "a", "max_tokens": 1}

    response = await client.post("/api/v1/process", headers=user, json=prompt)
    assert response.status == 500
    text = await response.text()
    error = assert_envelope(await response.json(), "model_load_failed")
    assert str(models_dir) not in text and "/tmp" not in text and ".gguf" not in text, text
    assert "broken" in error["message"] and "daemon log" in error["message"]
    assert error["details"] == {"model": "broken"}

    openai = await client.post("/v1/completions", headers=user, json=prompt)
    assert openai.status == 500
    assert str(models_dir) not in await openai.text()

    response = await client.post("/api/v1/process", headers=admin, json=prompt)
    assert response.status == 500
    error = assert_envelope(await response.json(), "model_load_failed")
    assert "daemon log" not in error["message"]  # the admin gets the worker's own words


async def test_path_details_are_withheld_from_non_admins(
        aiohttp_client: Any, make_settings: Any, models_dir: Path) -> None:
    """A model file the store cannot read: its reason may carry the path (an OSError's text)."""
    (models_dir / "dangling.gguf").symlink_to(models_dir / "nowhere" / "x.gguf")
    settings = make_settings()
    client = await aiohttp_client(create_app(settings))
    user = bearer(issue(settings, "bob", scopes=("inference",)))
    response = await client.post("/api/v1/process", headers=user,
                                 json={"model": "dangling", "prompt": "a", "max_tokens": 1})
    assert response.status == 404
    text = await response.text()
    assert str(models_dir) not in text, text
    error = assert_envelope(await response.json(), "model_not_found")
    assert error["details"]["file"] == "dangling.gguf"


def test_for_client_drops_path_details_and_cuts_paths_from_messages() -> None:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from llamahomed.core.errors import DownloadInterrupted
    from llamahomed.http.redact import for_client

    request = make_mocked_request("GET", "/", app=web.Application())
    error = DownloadInterrupted("broke off writing /home/me/.local/share/llamahome/models/x.part; "
                                "see /api/v1/models/pull or https://h/a/b.gguf",
                                details={"partial": "/home/me/x.part", "received": 5,
                                         "url": "https://h/a/b.gguf"})
    shown = for_client(error, request)
    assert shown.code == "download_interrupted" and shown.status == error.status
    assert "/home" not in shown.message and "<hidden>" in shown.message
    assert "/api/v1/models/pull" in shown.message and "https://h/a/b.gguf" in shown.message
    assert shown.details == {"received": 5, "url": "https://h/a/b.gguf"}
