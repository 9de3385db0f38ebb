"""GET/POST /api/v1/config: partial updates merge, validate, persist atomically, apply at once."""

from __future__ import annotations

import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


async def test_get_config_has_the_guides_sections(api: Any, auth: dict[str, str]) -> None:
    config = await (await api.get("/api/v1/config", headers=auth)).json()
    assert config["model_settings"]["default_model"] == "tiny-llama"
    assert config["model_settings"]["max_tokens"] == 100
    assert config["model_settings"]["temperature"] == 0.7
    assert config["system_settings"]["max_requests_per_minute"] == 60
    assert "cache_size" in config["system_settings"]


async def test_a_partial_update_merges_persists_and_applies_to_the_next_request(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    response = await api.post("/api/v1/config", headers=auth, json={
        "model_settings": {"max_tokens": 3, "temperature": 0.0},
        "system_settings": {"cache_size": "10GB"}})
    assert response.status == 200, await response.text()
    config = await response.json()
    assert config["model_settings"] == {**config["model_settings"], "max_tokens": 3,
                                        "temperature": 0.0, "default_model": "tiny-llama"}
    assert config["system_settings"]["cache_size"] == "10GB"
    assert config["system_settings"]["max_requests_per_minute"] == 60  # untouched key kept
    on_disk = tomllib.loads(settings.config_file.read_text())
    assert on_disk["model_settings"] == {"max_tokens": 3, "temperature": 0.0}
    assert on_disk["system_settings"] == {"cache_size": "10GB"}
    data = await (await api.post("/api/v1/process", headers=auth,
                                 json={"prompt": "the cat", "temperature": 0})).json()
    assert data["usage"]["completion_tokens"] <= 3
    again = await (await api.get("/api/v1/config", headers=auth)).json()
    assert again == config


async def test_a_rejected_update_changes_nothing(api: Any, auth: dict[str, str], settings: Any) -> None:
    before = await (await api.get("/api/v1/config", headers=auth)).json()
    response = await api.post("/api/v1/config", headers=auth, json={
        "model_settings": {"max_tokens": 5, "bogus": 1}})
    assert response.status == 422
    body = await response.json()
    assert body["error"]["details"]["errors"][0]["field"] == "model_settings.bogus"
    assert await (await api.get("/api/v1/config", headers=auth)).json() == before
    assert not settings.config_file.exists()


async def test_settings_file_is_read_at_start(make_settings: Any, settings: Any) -> None:
    settings.config_file.parent.mkdir(parents=True, exist_ok=True)
    settings.config_file.write_text('port = 9999\n[system_settings]\nkeep_alive = 12.5\n')
    from llamahomed.core.settings import Settings

    loaded = Settings()
    assert loaded.port == 9999
    assert loaded.system_settings.keep_alive == 12.5
