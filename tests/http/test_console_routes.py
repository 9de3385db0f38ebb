"""The console's routes and the admin API it drives: static files with a strict CSP, the login
ticket, tokens over HTTP, and the model actions (load, unload, import, delete) on real workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fixtures.tiny_gguf import write_tiny_llama
from tests.http.test_error_shape import assert_envelope


async def test_the_console_is_served_with_a_strict_policy(api: Any) -> None:
    response = await api.get("/ui/")
    assert response.status == 200
    assert response.content_type == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = await response.text()
    assert '<script type="module" src="app.js"></script>' in page
    assert "<script>" not in page and " style=" not in page  # nothing inline for the CSP to block
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css"),
                       ("favicon.svg", "image/svg+xml")):
        asset = await api.get(f"/ui/{name}")
        assert asset.status == 200 and asset.content_type == kind, name
        assert asset.headers["Content-Security-Policy"] == csp


async def test_the_console_serves_its_own_files_only(api: Any) -> None:
    redirect = await api.get("/ui", allow_redirects=False)
    assert redirect.status == 308 and redirect.headers["Location"] == "/ui/"
    for path in ("/ui/nope.js", "/ui/..%2Fpyproject.toml", "/ui/%2e%2e%2f__init__.py",
                 "/ui/__init__.py"):
        response = await api.get(path)
        assert response.status == 404, path


async def test_a_login_ticket_is_worth_one_session_token_once(api: Any, auth: dict[str, str]) -> None:
    assert (await api.post("/api/v1/console/ticket")).status == 401
    made = await (await api.post("/api/v1/console/ticket", headers=auth)).json()
    assert made["path"] == f"/ui/#ticket={made['ticket']}" and made["expires_in"] == 60
    login = await api.post("/api/v1/console/login", json={"ticket": made["ticket"]})
    assert login.status == 200
    session = await login.json()
    assert session["expires_at"] is not None
    headers = {"Authorization": f"Bearer {session['token']}"}
    assert (await api.get("/api/v1/status", headers=headers)).status == 200  # admin's scopes
    again = await api.post("/api/v1/console/login", json={"ticket": made["ticket"]})
    assert again.status == 401
    assert_envelope(await again.json(), "authentication_error")
    bad = await api.post("/api/v1/console/login", json={"ticket": "x" * 40})
    assert bad.status == 401


async def test_tokens_over_the_api_create_list_and_revoke(api: Any, auth: dict[str, str]) -> None:
    made = await api.post("/api/v1/tokens", headers=auth,
                          json={"user": "alice", "scopes": ["inference"], "tier": "pro",
                                "expires_in": 3600})
    assert made.status == 200
    token = await made.json()
    assert token["user"] == "alice" and token["scopes"] == ["inference"] and token["tier"] == "pro"
    alice = {"Authorization": f"Bearer {token['token']}"}
    assert (await api.get("/v1/models", headers=alice)).status == 200
    assert (await api.get("/api/v1/tokens", headers=alice)).status == 403  # not an admin
    listed = await (await api.get("/api/v1/tokens", headers=auth)).json()
    mine = [t for t in listed["tokens"] if t["id"] == token["id"]]
    assert mine and mine[0]["status"] == "active" and "token" not in mine[0]
    revoked = await api.delete(f"/api/v1/tokens/{token['id']}", headers=auth)
    assert revoked.status == 200
    assert (await api.get("/v1/models", headers=alice)).status == 401
    listed = await (await api.get("/api/v1/tokens", headers=auth)).json()
    assert [t["status"] for t in listed["tokens"] if t["id"] == token["id"]] == ["revoked"]
    missing = await api.delete(f"/api/v1/tokens/{'0' * 32}", headers=auth)
    assert missing.status == 404
    for body in ({"user": "bob", "scopes": ["root"]}, {"user": ""}, {"user": "bob", "extra": 1},
                 {"user": "bob", "expires_in": -5}):
        response = await api.post("/api/v1/tokens", headers=auth, json=body)
        assert response.status in (400, 422), body
        assert "error" in await response.json()


async def test_models_load_unload_import_and_delete(api: Any, auth: dict[str, str],
                                                    tmp_path: Path) -> None:
    loaded = await api.post("/api/v1/models/tiny-llama/load", headers=auth)
    assert loaded.status == 200, await loaded.text()
    assert (await loaded.json())["loaded"] is True
    status = await (await api.get("/api/v1/status", headers=auth)).json()
    assert [m["id"] for m in status["models"]] == ["tiny-llama"]
    assert status["cpu"]["system_percent"] is not None
    unloaded = await (await api.post("/api/v1/models/tiny-llama/unload", headers=auth)).json()
    assert unloaded == {"id": "tiny-llama", "loaded": False, "was_loaded": True}
    assert (await (await api.get("/api/v1/status", headers=auth)).json())["models"] == []

    (tmp_path / "elsewhere").mkdir()
    source = write_tiny_llama(tmp_path / "elsewhere" / "extra-model.gguf", name="extra-model")
    imported = await api.post("/api/v1/models/import", headers=auth, json={"path": str(source)})
    assert imported.status == 200, await imported.text()
    model_id = (await imported.json())["id"]
    ids = [m["id"] for m in (await (await api.get("/api/v1/models", headers=auth)).json())["models"]]
    assert model_id in ids
    deleted = await api.delete(f"/api/v1/models/{model_id}", headers=auth)
    assert deleted.status == 200 and (await deleted.json())["removed"]
    assert (await api.get(f"/api/v1/models/{model_id}", headers=auth)).status == 404
    assert source.exists()  # the import linked or copied it; the original stays
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model")
    refused = await api.post("/api/v1/models/import", headers=auth, json={"path": str(not_gguf)})
    assert 400 <= refused.status < 500
    assert (await api.post("/api/v1/models/nope/load", headers=auth)).status == 404


async def test_the_native_api_takes_a_conversation(api: Any, auth: dict[str, str],
                                                   make_settings: Any) -> None:
    """``messages`` instead of ``prompt`` (what the playground sends); the tiny model has no
    chat template, so it is refused clearly, and giving both is refused."""
    both = await api.post("/api/v1/process", headers=auth, json={
        "prompt": "hi", "messages": [{"role": "user", "content": "hi"}]})
    assert both.status in (400, 422)
    neither = await api.post("/api/v1/process", headers=auth, json={"max_tokens": 3})
    assert neither.status in (400, 422)
    no_template = await api.post("/api/v1/process", headers=auth, json={
        "model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    assert no_template.status == 400
    assert "chat template" in (await no_template.json())["error"]["message"]
