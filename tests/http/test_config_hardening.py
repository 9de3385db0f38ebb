"""Issue 12.10 and 12.11: a broken config file, raw values and contradicting settings."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from llamahomed.core.settings import Settings


async def test_an_update_over_an_unparsable_config_file_rewrites_it_and_keeps_the_old_one(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    settings.config_file.parent.mkdir(parents=True, exist_ok=True)
    settings.config_file.write_text("[model_settings\nthis is = not toml")
    response = await api.post("/api/v1/config", headers=auth,
                              json={"model_settings": {"max_tokens": 7}})
    assert response.status == 200, await response.text()
    assert (await response.json())["model_settings"]["max_tokens"] == 7
    assert tomllib.loads(settings.config_file.read_text())["model_settings"]["max_tokens"] == 7
    kept = list(settings.config_file.parent.glob("config.toml.broken-*"))
    assert len(kept) == 1 and "not toml" in kept[0].read_text()
    assert (await api.get("/api/v1/config", headers=auth)).status == 200


async def test_the_file_gets_the_validated_values_not_the_raw_patch(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    response = await api.post("/api/v1/config", headers=auth, json={
        "system_settings": {"n_slots": "4", "auto_quantize": "yes", "keep_alive": "30"}})
    assert response.status == 200, await response.text()
    on_disk = tomllib.loads(settings.config_file.read_text())["system_settings"]
    assert on_disk == {"n_slots": 4, "auto_quantize": True, "keep_alive": 30.0}
    Settings(config_file=settings.config_file)  # what was written starts a daemon


@pytest.mark.parametrize("patch, field", [
    ({"model_settings": {"default_model": "../../etc/passwd"}}, "model_settings.default_model"),
    ({"model_settings": {"max_tokens": 9000}}, "model_settings.max_tokens"),
    ({"system_settings": {"max_tokens_limit": 50}, "model_settings": {"max_tokens": 100}},
     "model_settings.max_tokens"),
])
async def test_settings_that_contradict_each_other_or_name_a_path_are_refused(
        api: Any, auth: dict[str, str], settings: Any, patch: dict[str, Any], field: str) -> None:
    response = await api.post("/api/v1/config", headers=auth, json=patch)
    assert response.status == 422, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "validation_error"
    assert field in [e["field"] for e in error["details"]["errors"]]
    assert not settings.config_file.exists()  # nothing persisted
    served = await api.post("/api/v1/process", headers=auth, json={"prompt": "hi", "max_tokens": 2})
    assert served.status == 200


def test_contradicting_settings_do_not_start_a_daemon(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="max_tokens_limit"):
        Settings(model_settings={"max_tokens": 500}, system_settings={"max_tokens_limit": 100})
