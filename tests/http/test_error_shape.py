"""Every error path answers with the guide's envelope, its status and a stable code."""

from __future__ import annotations

import io
import json
import os
import signal
from typing import Any

import pytest

from tests.fixtures.tiny_gguf import write_tiny_llama


def assert_envelope(body: Any, code: str) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    return dict(error)


CASES: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    # (name, method, path, request kwargs, status, code)
    ("no token", "POST", "/api/v1/process", {"json": {"prompt": "x"}, "auth": None}, 401,
     "authentication_error"),
    ("bad token", "GET", "/api/v1/models", {"auth": "Bearer not-a-token"}, 401, "authentication_error"),
    ("not bearer", "GET", "/api/v1/models", {"auth": "Basic dXNlcjpwYXNz"}, 401, "authentication_error"),
    ("unknown route without token", "GET", "/nope", {"auth": None}, 401, "authentication_error"),
    ("unknown route", "GET", "/api/v1/nope", {}, 404, "not_found"),
    ("wrong method", "DELETE", "/api/v1/process", {}, 405, "method_not_allowed"),
    ("body too large", "POST", "/api/v1/process", {"data": io.BytesIO(b"x" * (5 * 2**20)),
                                                   "headers": {"Content-Type": "application/json"}},
     413, "payload_too_large"),
    ("form body", "POST", "/api/v1/process", {"data": {"prompt": "x"}}, 415, "unsupported_media_type"),
    ("bad json", "POST", "/api/v1/process", {"data": b"{nope",
                                             "headers": {"Content-Type": "application/json"}},
     400, "invalid_request"),
    ("json not an object", "POST", "/api/v1/process", {"json": [1, 2]}, 400, "invalid_request"),
    ("missing prompt", "POST", "/api/v1/process", {"json": {"max_tokens": 3}}, 422, "validation_error"),
    ("unknown field", "POST", "/api/v1/stream", {"json": {"prompt": "x", "bogus": 1}}, 422,
     "validation_error"),
    ("bad temperature", "POST", "/api/v1/process", {"json": {"prompt": "x", "temperature": -1}}, 422,
     "validation_error"),
    ("max_tokens over cap", "POST", "/api/v1/process", {"json": {"prompt": "x", "max_tokens": 10**6}},
     422, "validation_error"),
    ("empty batch", "POST", "/api/v1/batch", {"json": {"prompts": []}}, 422, "validation_error"),
    ("unknown model", "POST", "/api/v1/process", {"json": {"prompt": "x", "model": "no-such"}}, 404,
     "model_not_found"),
    ("catalog model not on disk", "POST", "/api/v1/process",
     {"json": {"prompt": "x", "model": "llama3.3"}}, 404, "model_not_found"),
    ("unknown model detail", "GET", "/api/v1/models/no-such", {}, 404, "model_not_found"),
    ("raw with system", "POST", "/api/v1/process",
     {"json": {"prompt": "x", "raw": True, "system": "s"}}, 422, "validation_error"),
    ("boolean as a number", "POST", "/api/v1/process",
     {"json": {"prompt": "x", "temperature": True}}, 422, "validation_error"),
    ("tokenize without content", "POST", "/tokenize", {"json": {"add_special": True}}, 422,
     "validation_error"),
    ("detokenize an unknown token id", "POST", "/detokenize", {"json": {"tokens": [10**9]}}, 400,
     "invalid_request"),
    ("tokenize with an unknown model", "POST", "/tokenize",
     {"json": {"content": "x", "model": "no-such"}}, 404, "model_not_found"),
    ("prompt too long", "POST", "/api/v1/process", {"json": {"prompt": "the cat " * 400}}, 400,
     "context_length_exceeded"),
    ("config unknown section", "POST", "/api/v1/config", {"json": {"nope": {}}}, 422, "validation_error"),
    ("config bad value", "POST", "/api/v1/config",
     {"json": {"model_settings": {"temperature": "hot"}}}, 422, "validation_error"),
]


@pytest.mark.parametrize(("name", "method", "path", "kwargs", "status", "code"), CASES,
                         ids=[c[0] for c in CASES])
async def test_error_envelope(api: Any, auth: dict[str, str], name: str, method: str, path: str,
                              kwargs: dict[str, Any], status: int, code: str) -> None:
    kwargs = dict(kwargs)
    headers = dict(kwargs.pop("headers", {}))
    given = kwargs.pop("auth", auth["Authorization"])
    if given is not None:
        headers["Authorization"] = given
    response = await api.request(method, path, headers=headers, **kwargs)
    assert response.status == status, await response.text()
    error = assert_envelope(await response.json(), code)
    assert response.headers["x-request-id"]
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if name == "catalog model not on disk":
        assert "llamahomed models import" in error["message"]
    if name == "config bad value":
        assert error["details"]["errors"][0]["field"] == "model_settings.temperature"


async def test_health_needs_no_token(api: Any) -> None:
    response = await api.get("/health")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_a_model_that_fails_to_load_gives_model_load_failed(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    # A valid GGUF header for an architecture llama.cpp does not know: the header reader
    # accepts it, llama.cpp refuses it inside the worker.
    broken = settings.models_path / "unknown-arch.gguf"
    write_tiny_llama(broken, name="unknown-arch")
    data = bytearray(broken.read_bytes())
    data[data.index(b"llama"): data.index(b"llama") + 5] = b"zzzzz"
    broken.write_bytes(bytes(data))
    response = await api.post("/api/v1/process", headers=auth,
                              json={"prompt": "x", "model": "unknown-arch"})
    body = await response.json()
    assert response.status == 500, body
    assert_envelope(body, "model_load_failed")
    health = await api.get("/health")
    assert health.status == 200


async def test_a_worker_killed_mid_request_gives_worker_crashed_then_recovers(
        api: Any, auth: dict[str, str]) -> None:
    response = await api.post("/api/v1/stream", headers=auth,
                              json={"prompt": "the cat", "max_tokens": 200, "temperature": 0})
    first = await response.content.readline()
    assert b'"chunk"' in first
    from llamahomed.http.keys import INFERENCE

    worker = api.server.app[INFERENCE].pool.workers()["tiny-llama"]
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    rest = (await response.content.read()).decode().splitlines()
    last = json.loads(rest[-1])
    assert_envelope(last, "worker_crashed")
    again = await api.post("/api/v1/process", headers=auth, json={"prompt": "the cat", "max_tokens": 3})
    assert again.status == 200, await again.text()
    assert (await again.json())["usage"]["completion_tokens"] >= 1


async def test_a_malformed_file_in_the_store_is_skipped_not_fatal(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    (settings.models_path / "garbage.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    (settings.models_path / "empty.gguf").write_bytes(b"")
    listing = await (await api.get("/api/v1/models", headers=auth)).json()
    assert [m["id"] for m in listing["models"]] == ["tiny-llama"]
    response = await api.post("/api/v1/process", headers=auth, json={"prompt": "x", "model": "garbage"})
    assert_envelope(await response.json(), "model_not_found")


def test_every_error_class_has_a_distinct_code() -> None:
    from llamahomed.core.errors import ERROR_CLASSES

    codes = [cls.code for cls in ERROR_CLASSES]
    assert len(codes) == len(set(codes))
    assert all(400 <= cls.status < 600 for cls in ERROR_CLASSES)



async def test_changing_config_needs_the_admin_scope(api: Any, settings: Any) -> None:
    from llamahomed.core.authority import Authority

    token = Authority.from_settings(settings).generator.create_token(
        user_id="bob", expires_in=60, scopes=("inference",))
    response = await api.post("/api/v1/config", headers={"Authorization": f"Bearer {token}"},
                              json={"model_settings": {"max_tokens": 5}})
    assert response.status == 403
    assert_envelope(await response.json(), "permission_denied")
    readable = await api.get("/api/v1/config", headers={"Authorization": f"Bearer {token}"})
    assert readable.status == 200


async def test_an_expired_token_is_refused(api: Any, settings: Any) -> None:
    import time

    from llamahome.auth import TokenGenerator

    from llamahomed.core.authority import load_or_create_secret

    secret = load_or_create_secret(settings.secret_file)
    token = TokenGenerator(secret_key=secret, clock=lambda: time.time() - 3600).create_token(
        user_id="old", expires_in=60)
    response = await api.get("/api/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 401
    assert "expired" in assert_envelope(await response.json(), "authentication_error")["message"]


async def test_an_unexpected_exception_is_a_500_envelope(aiohttp_client: Any, settings: Any) -> None:
    # HTTP-layer logic only: a route that raises something no handler expects.
    from llamahomed.http.app import create_app

    app = create_app(settings)

    async def broken(request: Any) -> Any:
        raise RuntimeError("boom")

    app.router.add_get("/api/v1/broken", broken)
    client = await aiohttp_client(app)
    token = settings.admin_token_file.read_text().strip()
    response = await client.get("/api/v1/broken", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 500
    error = assert_envelope(await response.json(), "internal_error")
    assert "boom" not in error["message"]


def test_secret_and_admin_token_files_are_private(settings: Any) -> None:
    import stat

    from llamahomed.http.app import create_app

    create_app(settings)
    for path in (settings.secret_file, settings.admin_token_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_full_queue_is_refused_at_once_with_server_busy(
        aiohttp_client: Any, make_settings: Any) -> None:
    from llamahomed.http.app import create_app
    from llamahomed.core.settings import SystemSettings

    settings = make_settings(system_settings=SystemSettings(
        engine="sequential", n_slots=1, max_queue=0, queue_timeout=5))
    write_tiny_llama(settings.models_path / "tiny-long.gguf",
                     n_ctx=4096, name="tiny-long")
    client = await aiohttp_client(create_app(settings))
    auth = {"Authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}
    body = {"model": "tiny-long", "prompt": "the cat", "max_tokens": 4000, "temperature": 0}
    holder = await client.post("/api/v1/stream", headers=auth, json=body)
    assert b"chunk" in await holder.content.readline()
    refused = await client.post("/api/v1/process", headers=auth, json=body)
    assert refused.status == 503
    error = assert_envelope(await refused.json(), "server_busy")
    assert int(refused.headers["Retry-After"]) == error["details"]["retry_after"] >= 1
    listing = await (await client.get("/api/v1/models", headers=auth)).json()
    long_model = next(m for m in listing["models"] if m["id"] == "tiny-long")
    assert (long_model["running"], long_model["queued"]) == (1, 0)
    holder.close()


def test_every_route_names_an_error_dialect_the_middleware_renders() -> None:
    from llamahomed.http.middleware import ERROR_RENDERERS
    from llamahomed.http.routes import ROUTES

    assert {route.errors for route in ROUTES} <= set(ERROR_RENDERERS)
    assert {r.path for r in ROUTES if r.errors == "openai"} == {
        r.path for r in ROUTES if r.path.startswith("/v1/") and not r.path.startswith("/v1/messages")}
