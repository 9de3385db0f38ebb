"""system_settings.rpc_servers / rpc_policy through the config endpoint and the TOML file."""

from __future__ import annotations

import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


async def test_rpc_servers_are_validated_persisted_and_shown(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    for bad in (["no-port"], ["host:0"], ["a:1", "a:1"]):
        response = await api.post("/api/v1/config", headers=auth,
                                  json={"system_settings": {"rpc_servers": bad}})
        body = await response.json()
        assert response.status == 422, body
        assert body["error"]["code"] == "validation_error"
        assert body["error"]["details"]["errors"][0]["field"] == "system_settings.rpc_servers"
    response = await api.post("/api/v1/config", headers=auth, json={"system_settings": {
        "rpc_servers": ["127.0.0.1:50052", "[::1]:50053"], "rpc_policy": "always"}})
    assert response.status == 200, await response.text()
    on_disk = tomllib.loads(settings.config_file.read_text())
    assert on_disk["system_settings"] == {"rpc_servers": ["127.0.0.1:50052", "[::1]:50053"],
                                          "rpc_policy": "always"}
    bad_policy = await api.post("/api/v1/config", headers=auth,
                                json={"system_settings": {"rpc_policy": "sometimes"}})
    assert bad_policy.status == 422


async def test_a_configured_host_that_is_down_is_named_in_the_plan_and_the_model_loads_here(
        api: Any, auth: dict[str, str]) -> None:
    from tests.fixtures.daemon import free_port

    down = f"127.0.0.1:{free_port()}"
    await api.post("/api/v1/config", headers=auth, json={"system_settings": {"rpc_servers": [down]}})
    model = await (await api.get("/api/v1/models/tiny-llama", headers=auth)).json()
    assert f"RPC host {down} left out of the plan: Connection refused" in model["plan"]["reasons"]
    assert [r["backend"] for r in model["plan"]["layout"]] == ["cpu"]
    done = await api.post("/api/v1/process", headers=auth, json={"prompt": "x", "max_tokens": 2})
    assert done.status == 200, await done.text()
