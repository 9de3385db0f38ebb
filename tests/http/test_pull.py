"""POST /api/v1/models/pull: admin only, NDJSON progress, the result served at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.tiny_gguf import write_tiny_llama
from tests.http.test_error_shape import assert_envelope

PULL = "/api/v1/models/pull"


@pytest.fixture
def settings(make_settings: Any) -> Any:
    """The test server listens on loopback: the pull policy needs it named."""
    return make_settings(system_settings={"pull_allowed_hosts": ["127.0.0.1"]})


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


async def test_admin_pull_streams_progress_and_the_model_serves(
        api: Any, auth: dict[str, str], file_server: Any, models_dir: Path, tmp_path: Path) -> None:
    served, server = file_server
    served.body = write_tiny_llama(
        tmp_path / "q8.gguf", ftype="q8_0").read_bytes()
    url = str(server.make_url("/tiny-llama-Q8_0.gguf"))
    response = await api.post(PULL, headers=auth, json={"model": url, "sha256": served.sha256})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    events = lines(await response.text())
    assert events[0] == {"status": "pulling", "file": "tiny-llama-Q8_0.gguf", "url": url,
                         "quantization": None, "expected_sha256": served.sha256}
    statuses = [e["status"] for e in events]
    assert "downloading" in statuses and statuses[-2:] == ["verifying", "success"]
    final = events[-1]
    assert final["done"] is True and final["verified"] is True
    assert final["variant"] == "tiny-llama:q8_0" and final["sha256"] == served.sha256
    assert (models_dir / "tiny-llama-Q8_0.gguf").read_bytes() == served.body

    detail = await (await api.get("/api/v1/models/tiny-llama", headers=auth)).json()
    assert {v["quantization"] for v in detail["variants"]} == {"F32", "Q8_0"}
    generated = await api.post("/api/v1/process", headers=auth, json={
        "prompt": "hi", "model": "tiny-llama:q8_0", "max_tokens": 4, "temperature": 0})
    assert generated.status == 200
    assert (await generated.json())["usage"]["completion_tokens"] == 4


async def test_failure_after_the_headers_is_the_last_line(api: Any, auth: dict[str, str],
                                                          file_server: Any, models_dir: Path) -> None:
    served, server = file_server
    response = await api.post(PULL, headers=auth, json={
        "model": str(server.make_url("/x.gguf")), "sha256": "0" * 64})
    assert response.status == 200
    final = lines(await response.text())[-1]
    assert_envelope(final, "digest_mismatch")
    assert not (models_dir / "x.gguf").exists() and not (models_dir / "x.gguf.part").exists()


async def test_pull_without_streaming(api: Any, auth: dict[str, str], file_server: Any) -> None:
    served, server = file_server
    response = await api.post(PULL, headers=auth, json={
        "model": str(server.make_url("/other.gguf")), "stream": False})
    body = await response.json()
    assert response.status == 200, body
    assert body["file"] == "other.gguf" and body["verified"] is False
    assert body["sha256"] == served.sha256
    served.status = 404
    response = await api.post(PULL, headers=auth, json={
        "model": str(server.make_url("/gone.gguf")), "stream": False})
    assert response.status == 404
    assert_envelope(await response.json(), "download_not_found")


async def test_pull_needs_the_admin_scope_and_a_known_model(api: Any, auth: dict[str, str],
                                                            settings: Any) -> None:
    from llamahomed.core.authority import Authority

    token = Authority.from_settings(settings).generator.create_token(
        user_id="bob", expires_in=60, scopes=("inference",))
    response = await api.post(PULL, headers={"Authorization": f"Bearer {token}"},
                              json={"model": "llama3.2-1b"})
    assert response.status == 403
    assert_envelope(await response.json(), "permission_denied")
    response = await api.post(PULL, headers=auth, json={"model": "no-such-model"})
    assert response.status == 404
    assert_envelope(await response.json(), "model_not_found")
    response = await api.post(PULL, headers=auth, json={"model": "llama3.2-1b", "variant": "Q9"})
    assert response.status == 400
    assert_envelope(await response.json(), "invalid_request")
    response = await api.post(PULL, headers=auth, json={"model": "x", "bogus": 1})
    assert response.status == 422
