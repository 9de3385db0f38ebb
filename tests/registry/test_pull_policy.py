"""The pull policy (registry/policy.py): allowed hosts, non-public addresses, redirects, size
limits and disk checks while the bytes arrive, terse errors. Against a real local server."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from llamahomed.core.errors import DownloadFailed, InsufficientStorage
from llamahomed.core.settings import Settings
from llamahomed.registry.catalog import Catalog
from llamahomed.registry.policy import PullPolicy, PullRefused
from llamahomed.registry.pull import PullSource, download
from tests.fixtures.file_server import LOCAL, Served

FILE = "policy-llama.gguf"
PULL = "/api/v1/models/pull"


def src(server: Any, path: str = f"/{FILE}", host: str = "127.0.0.1", **kw: Any) -> PullSource:
    url = str(server.make_url(path)).replace("127.0.0.1", host)
    return PullSource(url=url, file=FILE, **kw)


def leftovers(store: Path) -> list[str]:
    return sorted(p.name for p in store.iterdir()) if store.exists() else []


# --- hosts ------------------------------------------------------------------------------------


async def test_the_api_refuses_a_host_outside_the_allowlist_before_any_request(
        aiohttp_client: Any, make_settings: Any, file_server: Any, models_dir: Path) -> None:
    from llamahomed.http.app import create_app

    served, server = file_server
    settings = make_settings()
    client = await aiohttp_client(create_app(settings))
    auth = {"Authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}
    url = str(server.make_url("/x.gguf"))
    for model in (url, "https://example.com/x.gguf"):
        response = await client.post(PULL, headers=auth, json={"model": model})
        assert response.status == 403, await response.text()
        error = (await response.json())["error"]
        assert error["code"] == "permission_denied"
        assert "system_settings.pull_allowed_hosts" in error["message"]
    assert served.requests == []

    settings = make_settings(system_settings={"pull_allowed_hosts": ["127.0.0.1"]})
    client = await aiohttp_client(create_app(settings))
    response = await client.post(PULL, headers=auth, json={"model": url, "stream": False})
    assert response.status == 200, await response.text()
    assert (models_dir / "x.gguf").exists()


def test_catalog_hosts_are_allowed_and_loopback_needs_naming(tmp_path: Path) -> None:
    policy = PullPolicy.from_settings(Settings(install_default_model=False), Catalog.load())
    policy.check_url("https://huggingface.co/a/b/resolve/main/x.gguf")
    policy.check_redirect("https://huggingface.co/x", "https://cas-bridge.xethub.hf.co/y")
    for refused in ("https://example.com/x.gguf", "http://127.0.0.1:9/x.gguf",
                    "http://[::1]/x.gguf", "http://10.0.0.8/x.gguf", "http://169.254.169.254/x",
                    "ftp://huggingface.co/x.gguf"):
        with pytest.raises(PullRefused):
            policy.check_url(refused)
    anywhere = PullPolicy(allowed=("*",))
    anywhere.check_url("https://example.com/x.gguf")
    with pytest.raises(PullRefused, match="non-public"):
        anywhere.check_url("http://192.168.1.2/x.gguf")  # '*' does not name private ranges
    lan = PullPolicy(allowed=("192.168.0.0/16", "nas.lan"))
    lan.check_url("http://192.168.1.2/x.gguf")
    assert lan.allows_address("nas.lan", "10.1.1.1") and not lan.allows_address("x.com", "10.1.1.1")
    with pytest.raises(ValueError):
        Settings(system_settings={"pull_allowed_hosts": ["http://x/"]})
    assert Settings(system_settings={"pull_allowed_hosts": ["*.Example.com."]}
                    ).system_settings.pull_allowed_hosts == [".example.com"]


async def test_a_name_that_resolves_to_loopback_is_refused_unless_named(
        file_server: Any, tmp_path: Path) -> None:
    served, server = file_server
    with pytest.raises(PullRefused, match="resolves to a loopback"):
        await download(src(server, host="localhost"), tmp_path,
                       policy=PullPolicy(allowed=("*",)), retries=0)
    assert served.requests == []
    result = await download(src(server, host="localhost"), tmp_path,
                            policy=PullPolicy(allowed=("localhost",)), retries=0)
    assert result.path.read_bytes() == served.body


# --- redirects --------------------------------------------------------------------------------


async def test_same_host_redirects_are_followed(file_server: Any, tmp_path: Path) -> None:
    served, server = file_server
    served.redirect = "/real.gguf"
    result = await download(src(server), tmp_path, policy=LOCAL, retries=0)
    assert result.path.read_bytes() == served.body and len(served.requests) == 2


async def test_a_redirect_to_another_host_is_refused(file_server: Any, tmp_path: Path) -> None:
    served, server = file_server
    served.redirect = str(server.make_url("/real.gguf")).replace("127.0.0.1", "localhost")
    with pytest.raises(PullRefused, match="redirected the pull to localhost"):
        await download(src(server), tmp_path, policy=LOCAL, retries=0)
    assert len(served.requests) == 1 and leftovers(tmp_path) == []


async def test_redirects_are_bounded(file_server: Any, tmp_path: Path) -> None:
    served, server = file_server
    served.redirect = "/loop.gguf?again"  # the path never matches: redirects forever
    with pytest.raises(PullRefused, match="more than 5 times"):
        await download(src(server), tmp_path, policy=LOCAL, retries=0)
    assert len(served.requests) == 6


# --- size and disk ----------------------------------------------------------------------------


async def test_a_body_without_content_length_stops_at_the_size_limit(
        file_server: Any, tmp_path: Path) -> None:
    served, server = file_server
    served.chunked = True
    limit = len(served.body) // 2
    with pytest.raises(DownloadFailed, match="over the pull size limit") as caught:
        await download(src(server), tmp_path, retries=0,
                       policy=PullPolicy(allowed=("127.0.0.1",), max_bytes=limit))
    assert caught.value.details["limit"] == limit
    assert leftovers(tmp_path) == []  # the partial is gone
    result = await download(src(server), tmp_path, policy=LOCAL, retries=0)  # the default fits
    assert result.path.read_bytes() == served.body


async def test_a_content_length_over_the_limit_is_refused_before_the_body(
        file_server: Any, tmp_path: Path) -> None:
    served, server = file_server
    with pytest.raises(DownloadFailed, match="over the pull size limit"):
        await download(src(server), tmp_path, retries=0,
                       policy=PullPolicy(allowed=("127.0.0.1",), max_bytes=1000))
    assert leftovers(tmp_path) == []


async def test_the_catalog_size_caps_a_body_without_content_length(
        file_server: Any, tmp_path: Path) -> None:
    served, server = file_server
    served.chunked = True
    with pytest.raises(DownloadFailed, match="over the pull size limit"):
        await download(src(server, size=len(served.body) - 10), tmp_path, policy=LOCAL, retries=0)
    assert leftovers(tmp_path) == []


def test_the_size_limit_setting() -> None:
    settings = Settings(system_settings={"pull_max_size": "2GiB"})
    policy = PullPolicy.from_settings(settings, Catalog.load())
    assert policy.max_bytes == 2 << 30 and policy.limit(None) == 2 << 30
    assert policy.limit(1000) == 1000
    assert PullPolicy.from_settings(Settings(), Catalog.load()).max_bytes == 64 << 30


async def test_the_free_disk_space_is_checked_again_while_downloading(
        file_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llamahomed.registry import download as download_module

    served, server = file_server
    served.body = served.body * 8  # several write buffers
    served.chunked = True  # no length known: the check before the first byte cannot see it
    real = shutil.disk_usage
    calls = {"n": 0}

    def shrinking(path: Any) -> Any:
        calls["n"] += 1
        return real(path)._replace(free=10**12 if calls["n"] < 2 else 1000)

    monkeypatch.setattr(shutil, "disk_usage", shrinking)
    monkeypatch.setattr(download_module, "WRITE_BUFFER", 1 << 20)
    with pytest.raises(InsufficientStorage):
        await download(src(server, sha256=""), tmp_path, policy=LOCAL, retries=0)
    assert calls["n"] >= 2
    part = tmp_path / f"{FILE}.part"
    assert not (tmp_path / FILE).exists()
    assert not part.exists() or part.stat().st_size < len(served.body)


# --- terse errors -----------------------------------------------------------------------------


async def _banner_server(banner: bytes) -> tuple[asyncio.AbstractServer, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_errors_do_not_tell_a_closed_port_from_a_non_http_one(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    server, open_port = await _banner_server(b"SSH-2.0-OpenSSH_9.6 secret-banner\r\n")
    messages = []
    try:
        for port in (closed, open_port):
            with pytest.raises(DownloadFailed) as caught:
                await download(PullSource(f"http://127.0.0.1:{port}/m.gguf", "m.gguf"), tmp_path,
                               policy=LOCAL, retries=0)
            assert caught.value.code == "download_failed"
            text = json.dumps(caught.value.envelope())
            assert "SSH" not in text and "secret" not in text and "refused" not in text.lower()
            messages.append(caught.value.message.replace(str(port), "PORT"))
    finally:
        server.close()
        await server.wait_closed()
    assert messages[0] == messages[1]
    assert "no usable HTTP answer" in messages[0]


async def test_http_errors_carry_the_status_not_the_peers_text(file_server: Any,
                                                               tmp_path: Path) -> None:
    served, server = file_server
    served.status = 418
    with pytest.raises(DownloadFailed) as caught:
        await download(src(server), tmp_path, policy=LOCAL, retries=0)
    assert caught.value.message == "the download from 127.0.0.1 failed: HTTP 418"
    assert "nope" not in json.dumps(caught.value.envelope())


def test_served_is_a_dataclass_the_tests_configure() -> None:
    assert Served(b"x").redirect is None


async def test_the_allowlist_changes_through_the_config_endpoint(
        aiohttp_client: Any, make_settings: Any, file_server: Any, models_dir: Path) -> None:
    from llamahomed.http.app import create_app

    served, server = file_server
    settings = make_settings()
    client = await aiohttp_client(create_app(settings))
    auth = {"Authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}
    url = str(server.make_url("/live.gguf"))
    assert (await client.post(PULL, headers=auth, json={"model": url})).status == 403
    response = await client.post("/api/v1/config", headers=auth, json={
        "system_settings": {"pull_allowed_hosts": ["127.0.0.1"]}})
    assert response.status == 200, await response.text()
    response = await client.post(PULL, headers=auth, json={"model": url, "stream": False})
    assert response.status == 200, await response.text()
    response = await client.post("/api/v1/config", headers=auth, json={
        "system_settings": {"pull_allowed_hosts": ["not a host"]}})
    assert response.status in (400, 422)
