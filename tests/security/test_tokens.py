"""Tokens through the real app: expired, tampered, wrong secret, wrong purpose, revoked, rotated."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp import web
from llamahome.auth import TokenGenerator

from llamahomed.http.keys import ROUTES
from llamahomed.http.route import Operation, Route
from llamahomed.http.keys import CLAIMS
from llamahomed.http.app import create_app
from llamahomed.cli import main
from llamahomed.core.authority import Authority, read_keys
from tests.security.helpers import assert_envelope, bearer, issue

MODELS = "/api/v1/models"


async def refused(api: Any, token: str | None, *, error: str | None = "invalid_token") -> str:
    """Assert a 401 in the envelope with an RFC 6750 challenge; return the message."""
    response = await api.get(MODELS, headers=bearer(token) if token is not None else {})
    assert response.status == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    if error:
        assert f'error="{error}"' in challenge
    else:
        assert "error=" not in challenge
    return str(assert_envelope(await response.json(), "authentication_error")["message"])


async def accepted(api: Any, token: str) -> None:
    response = await api.get(MODELS, headers=bearer(token))
    assert response.status == 200, await response.text()


async def test_a_valid_token_passes_and_its_claims_reach_the_handler(
        aiohttp_client: Any, settings: Any) -> None:
    app = create_app(settings)

    async def whoami(request: web.Request) -> web.Response:
        claims = request[CLAIMS]
        return web.json_response({"user": claims.user_id, "tier": claims.tier,
                                  "scopes": list(claims.scopes), "jti": claims.token_id})

    app[ROUTES].register(app, Route("GET", "/api/v1/test-whoami", whoami, "inference",
                                    Operation("Who am I (a test route)")))
    client = await aiohttp_client(app)
    token = issue(settings, "alice", tier="pro")
    response = await client.get("/api/v1/test-whoami", headers=bearer(token))
    data = await response.json()
    assert response.status == 200
    assert data["user"] == "alice" and data["tier"] == "pro" and data["scopes"] == ["inference"]
    assert len(data["jti"]) == 32


async def test_no_token_is_a_401_challenge_without_an_error_code(api: Any) -> None:
    message = await refused(api, None, error=None)
    assert "Bearer" in message


async def test_another_scheme_or_an_empty_token_is_refused(api: Any, settings: Any) -> None:
    token = issue(settings)
    for header in (f"Basic {token}", "Bearer", "Bearer ", token):
        response = await api.get(MODELS, headers={"Authorization": header})
        assert response.status == 401, header
        assert_envelope(await response.json(), "authentication_error")


async def test_cookies_and_query_strings_never_authenticate(api: Any, settings: Any) -> None:
    token = issue(settings)
    for kwargs in ({"cookies": {"token": token, "Authorization": f"Bearer {token}"}},
                   {"params": {"token": token, "access_token": token}}):
        response = await api.get(MODELS, **kwargs)
        assert response.status == 401


async def test_an_expired_token_is_refused(api: Any, settings: Any) -> None:
    authority = Authority.from_settings(settings)
    past = TokenGenerator(list(reversed(authority.keys)), clock=lambda: time.time() - 7200)
    authority.close()
    token = past.create_token("alice", expires_in=60)
    assert "expired" in await refused(api, token)


async def test_a_tampered_token_is_refused(api: Any, settings: Any) -> None:
    token = issue(settings, "alice")
    payload, timestamp, signature = token.rsplit(".", 2)
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for forged in (f"{payload}.{timestamp}.{flipped}", f"{payload[:-1]}x.{timestamp}.{signature}",
                   token + "x", token[:-4]):
        assert "invalid token" in await refused(api, forged)


async def test_a_token_signed_with_another_secret_is_refused(api: Any) -> None:
    token = TokenGenerator("not-the-daemons-secret").create_token("mallory", scopes=["admin"])
    await refused(api, token)


async def test_revoking_a_token_id_with_the_cli_takes_effect_on_the_running_app(
        api: Any, settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    token, other = issue(settings, "alice"), issue(settings, "alice")
    await accepted(api, token)
    jti = Authority.from_settings(settings).validator.decode(token).token_id
    assert main(["token", "revoke", jti[:12]]) == 0
    assert jti in capsys.readouterr().out
    assert "revoked" in await refused(api, token)
    await accepted(api, other)


async def test_revoking_a_user_refuses_all_their_earlier_tokens_only(
        api: Any, settings: Any) -> None:
    bobs = [issue(settings, "bob", scopes=s) for s in (("inference",), ("admin", "inference"))]
    carol = issue(settings, "carol")
    for token in (*bobs, carol):
        await accepted(api, token)
    assert main(["token", "revoke", "--user", "bob"]) == 0
    for token in bobs:
        assert "bob" in await refused(api, token)
    await accepted(api, carol)
    await accepted(api, issue(settings, "bob"))  # issued after the revocation


async def test_rotation_keeps_old_tokens_valid_until_they_expire_and_drop_old_ends_them(
        api: Any, settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    old = issue(settings, "alice", expires_in=3600)
    old_admin = settings.admin_token_file.read_text().strip()
    first_key = read_keys(settings.secret_file)[0]
    assert main(["token", "rotate-secret"]) == 0
    keys = read_keys(settings.secret_file)
    assert len(keys) == 2 and keys[1] == first_key  # new key first, old kept for `old`
    assert "kept key" in capsys.readouterr().out
    await accepted(api, old)
    new = issue(settings, "alice")
    await accepted(api, new)
    admin = settings.admin_token_file.read_text().strip()
    assert admin != old_admin
    await accepted(api, admin)
    await refused(api, old_admin)  # the rotation renewed (and revoked) the local admin token

    assert main(["token", "rotate-secret", "--drop-old"]) == 0
    assert len(read_keys(settings.secret_file)) == 1
    await refused(api, old)
    await refused(api, new)
    await accepted(api, settings.admin_token_file.read_text().strip())


def test_a_rotation_drops_keys_whose_tokens_have_all_expired(settings: Any) -> None:
    authority = Authority.from_settings(settings)
    try:
        short = authority.issue("alice", 0.05, ("inference",), "basic")
        time.sleep(0.1)
        rotation = authority.rotate()
        assert rotation.kept == {} and len(rotation.dropped) == 1
        assert not authority.validator.validate_token(short)
        assert len(authority.keys) == 1
    finally:
        authority.close()


def test_the_token_store_records_claims_never_tokens(settings: Any) -> None:
    token = issue(settings, "alice", scopes=("admin", "inference"), tier="enterprise")
    data = settings.token_store_file.read_bytes()
    wal = settings.token_store_file.with_name("tokens.db-wal")
    if wal.exists():
        data += wal.read_bytes()
    assert token.encode() not in data
    assert token.rsplit(".", 1)[1].encode() not in data  # not even the signature
    authority = Authority.from_settings(settings)
    try:
        record = next(t for t in authority.issued() if t.user_id == "alice")
        assert (record.scopes, record.tier) == (("admin", "inference"), "enterprise")
        assert record.expires_at == pytest.approx(record.issued_at + 3600)
    finally:
        authority.close()



def test_signatures_are_compared_in_constant_time(settings: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append(a)
        return real(a, b)

    authority = Authority.from_settings(settings)
    try:
        token = authority.issue("alice", 60)
        monkeypatch.setattr(hmac, "compare_digest", spy)
        authority.check(f"Bearer {token}")
        assert compared  # the signature check went through hmac.compare_digest
    finally:
        authority.close()


def test_the_running_app_sees_back_to_back_rotations(settings: Any) -> None:
    daemon, cli = Authority.from_settings(settings), Authority.from_settings(settings)
    try:
        for _ in range(3):  # same file size each time (two keys), within one mtime tick
            cli.issue("alice", 3600)
            cli.rotate()
            token = cli.issue("alice", 3600)
            assert daemon.decode(token).user_id == "alice"
    finally:
        daemon.close()
        cli.close()


def test_revocations_of_expired_tokens_are_forgotten(settings: Any) -> None:
    authority = Authority.from_settings(settings)
    try:
        token = authority.issue("alice", 0.05, ("inference",), "basic")
        authority.store.revoke(authority.validator.decode(token).token_id)
        time.sleep(0.1)
        assert authority.store.prune() == 1
    finally:
        authority.close()



async def test_an_unreadable_token_store_fails_closed(api: Any, settings: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from llamahomed.http.keys import AUTHORITY

    # WAL mode means a writer never blocks the daemon's reads; a broken or vanished disk can
    # still make a read fail, and then no token is served unchecked.
    token = issue(settings, "alice")
    store = api.server.app[AUTHORITY].store

    def broken(claims: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "revocation_reason", broken)
    response = await api.get(MODELS, headers=bearer(token))
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert_envelope(await response.json(), "server_busy")
    monkeypatch.undo()
    await accepted(api, token)
