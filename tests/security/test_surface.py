"""The hardened surface: bind policy, Host and Origin allowlists, CORS, size and stream limits."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from llamahomed.http.guard import check_bind, check_origin, is_loopback, split_host
from llamahomed.http.app import create_app
from llamahomed.core.errors import OriginNotAllowed, StartupError
from llamahomed.core.settings import SystemSettings
from tests.fixtures.daemon import llamahomed
from tests.fixtures.tiny_gguf import write_tiny_llama
from tests.security.helpers import assert_envelope, bearer, handshake_request, issue

MODELS = "/api/v1/models"
APP_ORIGIN = "http://localhost:3000"


def port_of(client: Any) -> int:
    return int(client.server.port)


# -- bind ----------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_binds_need_nothing(make_settings: Any, host: str) -> None:
    assert is_loopback(host)
    check_bind(make_settings(host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_a_remote_bind_is_refused_without_allow_remote(make_settings: Any, host: str) -> None:
    with pytest.raises(StartupError, match="allow_remote"):
        check_bind(make_settings(host=host))


def test_a_remote_bind_with_allow_remote_logs_a_warning(make_settings: Any) -> None:
    with capture_logs() as logs:
        check_bind(make_settings(host="0.0.0.0", allow_remote=True))
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["remote_bind"]


def test_the_daemon_refuses_to_start_on_0_0_0_0_with_one_clear_line() -> None:
    result = llamahomed("start", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to listen on 0.0.0.0" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


# -- Host ----------------------------------------------------------------------------------
def test_split_host() -> None:
    assert split_host("LocalHost:8910") == ("localhost", 8910)
    assert split_host("[::1]:8910") == ("[::1]", 8910)
    assert split_host("[::1]") == ("[::1]", None)
    assert split_host("example.com.") == ("example.com", None)
    for bad in ("a:b", "a:0", "a:99999", "[::1]x"):
        with pytest.raises(ValueError):
            split_host(bad)


async def test_a_forged_host_is_refused_before_authentication(api: Any, auth: dict[str, str]) -> None:
    port = port_of(api)
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}",
                 f"127.0.0.1:{port + 1}", "127.0.0.1", f"sub.localhost:{port}", "",
                 f"localhost:{port}:1"):
        for path in (MODELS, "/health"):
            response = await api.get(path, headers={**auth, "Host": host})
            assert response.status == 403, host
            assert_envelope(await response.json(), "host_not_allowed")


async def test_loopback_names_with_the_port_are_accepted(api: Any, auth: dict[str, str]) -> None:
    port = port_of(api)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST.:{port}"):
        response = await api.get(MODELS, headers={**auth, "Host": host})
        assert response.status == 200, host


async def test_allowed_hosts_adds_names(aiohttp_client: Any, make_settings: Any) -> None:
    settings = make_settings(allowed_hosts=["llama.lan", "proxy.example:443"])
    client = await aiohttp_client(create_app(settings))
    auth = bearer(settings.admin_token_file.read_text().strip())
    for host, status in (("llama.lan:8910", 200), ("llama.lan", 200), ("proxy.example:443", 200),
                         ("proxy.example:444", 403), ("evil.example", 403)):
        response = await client.get(MODELS, headers={**auth, "Host": host})
        assert response.status == status, host


# -- Origin and CORS -------------------------------------------------------------------------
async def test_a_foreign_origin_is_refused_even_with_a_valid_token(api: Any, auth: dict[str, str]) -> None:
    for origin in ("http://evil.example", "null", APP_ORIGIN):  # nothing is allowed by default
        response = await api.get(MODELS, headers={**auth, "Origin": origin})
        assert response.status == 403
        assert_envelope(await response.json(), "origin_not_allowed")
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_an_allowed_origin_gets_cors_headers_for_that_origin_only(
        aiohttp_client: Any, make_settings: Any) -> None:
    settings = make_settings(allowed_origins=[APP_ORIGIN])
    client = await aiohttp_client(create_app(settings))
    auth = bearer(settings.admin_token_file.read_text().strip())
    response = await client.get(MODELS, headers={**auth, "Origin": APP_ORIGIN})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Origin" in response.headers.getall("Vary")
    assert "x-request-id" in response.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Credentials" not in response.headers
    plain = await client.get(MODELS, headers=auth)
    assert "Access-Control-Allow-Origin" not in plain.headers
    other = await client.get(MODELS, headers={**auth, "Origin": "http://localhost:3001"})
    assert other.status == 403 and "Access-Control-Allow-Origin" not in other.headers
    denied = await client.get(MODELS, headers={"Origin": APP_ORIGIN})  # CORS is not auth
    assert denied.status == 401
    assert denied.headers["Access-Control-Allow-Origin"] == APP_ORIGIN  # so the page can read why


async def test_cors_headers_reach_a_stream_before_its_first_chunk(
        aiohttp_client: Any, make_settings: Any) -> None:
    settings = make_settings(allowed_origins=[APP_ORIGIN])
    client = await aiohttp_client(create_app(settings))
    auth = bearer(settings.admin_token_file.read_text().strip())
    response = await client.post("/api/v1/stream", headers={**auth, "Origin": APP_ORIGIN},
                                 json={"prompt": "the cat", "max_tokens": 4, "temperature": 0})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert b'"done": true' in await response.read()


async def test_preflight_is_answered_for_allowed_origins_only(
        aiohttp_client: Any, make_settings: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(allowed_origins=[APP_ORIGIN])))
    ask = {"Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "Authorization, Content-Type, X-Evil"}
    ok = await client.options("/api/v1/process", headers={**ask, "Origin": APP_ORIGIN})
    assert ok.status == 204
    assert ok.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    assert ok.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert "Access-Control-Allow-Credentials" not in ok.headers
    bad = await client.options("/api/v1/process", headers={**ask, "Origin": "http://evil.example"})
    assert bad.status == 403 and "Access-Control-Allow-Origin" not in bad.headers


def test_check_origin_decides_websocket_handshakes(make_settings: Any) -> None:
    app = create_app(make_settings(allowed_origins=[APP_ORIGIN]))
    assert check_origin(handshake_request(app, None)) is None  # not a browser
    assert check_origin(handshake_request(app, APP_ORIGIN + "/")) == APP_ORIGIN + "/"
    for origin in ("http://evil.example", "null", "http://localhost:3000.evil.example"):
        with pytest.raises(OriginNotAllowed):
            check_origin(handshake_request(app, origin))


async def test_a_websocket_handshake_from_a_foreign_origin_is_refused(
        api: Any, auth: dict[str, str]) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.ws_connect("/api/v1/ws", headers=auth, origin="http://evil.example")
    assert refused.value.status == 403
    port = port_of(api)
    with pytest.raises(aiohttp.WSServerHandshakeError) as rebinding:
        await api.ws_connect("/api/v1/ws", headers={**auth, "Host": f"evil.example:{port}"})
    assert rebinding.value.status == 403


# -- limits ----------------------------------------------------------------------------------
async def test_oversized_headers_are_a_431_envelope(api: Any, auth: dict[str, str]) -> None:
    one_big = {**auth, "X-Big": "a" * 40_000}
    many = {**auth, **{f"X-Pad-{i}": "b" * 1000 for i in range(40)}}
    for headers in (one_big, many):
        response = await api.get(MODELS, headers=headers)
        assert response.status == 431
        assert assert_envelope(await response.json(), "headers_too_large")["details"]["limit"] == 32768


async def test_an_oversized_body_is_a_413_envelope(aiohttp_client: Any, make_settings: Any) -> None:
    settings = make_settings(max_body_bytes=2048)
    client = await aiohttp_client(create_app(settings))
    auth = bearer(settings.admin_token_file.read_text().strip())
    response = await client.post("/api/v1/process", headers=auth, json={"prompt": "x" * 4096})
    assert response.status == 413
    assert_envelope(await response.json(), "payload_too_large")


async def test_max_tokens_and_batch_size_are_capped(api: Any, auth: dict[str, str]) -> None:
    over = await api.post("/api/v1/process", headers=auth, json={"prompt": "a", "max_tokens": 8193})
    assert over.status == 422
    assert assert_envelope(await over.json(), "validation_error")["details"]["errors"][0][
        "field"] == "max_tokens"
    batch = await api.post("/api/v1/batch", headers=auth,
                           json={"prompts": ["a"] * 65, "max_tokens": 1})
    assert batch.status == 422
    assert "prompts" in assert_envelope(await batch.json(), "validation_error")["message"]


async def test_a_prompt_longer_than_the_context_is_refused(api: Any, auth: dict[str, str]) -> None:
    response = await api.post("/api/v1/process", headers=auth,
                              json={"prompt": "the cat sat on the mat " * 200, "max_tokens": 4})
    assert response.status == 400
    assert_envelope(await response.json(), "context_length_exceeded")


async def test_concurrent_streams_per_user_are_capped(aiohttp_client: Any, make_settings: Any) -> None:
    settings = make_settings(system_settings=SystemSettings(max_streams_per_token=1, n_slots=4))
    write_tiny_llama(settings.models_path / "tiny-long.gguf",
                     n_ctx=4096, name="tiny-long")
    client = await aiohttp_client(create_app(settings))
    alice, alice2, bob = (bearer(issue(settings, u)) for u in ("alice", "alice", "bob"))
    long_body = {"model": "tiny-long", "prompt": "the cat", "max_tokens": 4000, "temperature": 0}
    holder = await client.post("/api/v1/stream", headers=alice, json=long_body)
    assert b"chunk" in await holder.content.readline()
    short = {"model": "tiny-long", "prompt": "a", "max_tokens": 2, "temperature": 0}
    refused = await client.post("/api/v1/stream", headers=alice2, json=short)  # same user
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    error = assert_envelope(await refused.json(), "too_many_streams")
    assert error["details"]["limit"] == 1 and error["details"]["open"] == 1
    also = await client.post("/api/v1/process", headers=alice2, json={**short, "stream": True})
    assert also.status == 429
    assert (await client.post("/api/v1/process", headers=alice2, json=short)).status == 200
    other = await client.post("/api/v1/stream", headers=bob, json=short)
    assert other.status == 200 and b'"done": true' in await other.read()
    holder.close()
    for _ in range(100):  # the slot is given back once the server sees the disconnect
        again = await client.post("/api/v1/stream", headers=alice2, json=short)
        if again.status == 200:
            assert b'"done": true' in await again.read()
            break
        import asyncio

        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the stream slot was never given back")
