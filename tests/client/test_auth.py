"""Signed API tokens: issuing, validating, expiry, tampering, key rotation."""

from __future__ import annotations

import hashlib
import json

import pytest
from itsdangerous import URLSafeTimedSerializer
from llamahome.auth import TOKEN_SALT, TokenClaims, TokenGenerator, TokenValidator
from llamahome.error import AuthenticationError, ExpiredTokenError, InvalidTokenError


class Clock:
    """A settable clock, so that expiry is tested without sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_guide_example_round_trip() -> None:
    generator = TokenGenerator(secret_key="your-secret")
    token = generator.create_token(user_id="user123", expires_in=3600)
    validator = TokenValidator(secret_key="your-secret")
    assert validator.validate_token(token) is True


def test_claims_content() -> None:
    clock = Clock()
    token = TokenGenerator("s", clock=clock).create_token(
        "user123", expires_in=60, scopes=["inference", "admin"], tier="pro"
    )
    claims = TokenValidator("s", clock=clock).decode(token)
    assert claims == TokenClaims(
        user_id="user123",
        token_id=claims.token_id,
        issued_at=clock.now,
        expires_at=clock.now + 60,
        scopes=("inference", "admin"),
        tier="pro",
    )
    assert len(claims.token_id) == 32 and int(claims.token_id, 16) >= 0
    assert claims.has_scope("admin") and not claims.has_scope("metrics")


def test_defaults_and_unique_token_ids() -> None:
    generator, validator = TokenGenerator("s"), TokenValidator("s")
    first, second = (validator.decode(generator.create_token("u")) for _ in range(2))
    assert (first.scopes, first.tier) == (("inference",), "basic")
    assert first.expires_at == pytest.approx(first.issued_at + 3600)
    assert first.token_id != second.token_id


def test_payload_is_signed_with_salt_and_sha256() -> None:
    token = TokenGenerator("s").create_token("u", expires_in=None)
    serializer = URLSafeTimedSerializer(
        "s", salt=TOKEN_SALT, signer_kwargs={"digest_method": hashlib.sha256}
    )
    payload = serializer.loads(token)
    assert set(payload) == {"sub", "jti", "iat", "exp", "scp", "tier"}
    assert payload["exp"] is None


def test_expiry_uses_each_tokens_own_exp() -> None:
    clock = Clock()
    generator, validator = TokenGenerator("s", clock=clock), TokenValidator("s", clock=clock)
    short = generator.create_token("u", expires_in=1)
    long = generator.create_token("u", expires_in=3600)
    forever = generator.create_token("u", expires_in=None)
    clock.now += 0.5
    assert validator.validate_token(short)
    clock.now += 1
    assert not validator.validate_token(short)
    with pytest.raises(ExpiredTokenError) as info:
        validator.decode(short)
    assert isinstance(info.value, AuthenticationError)
    assert info.value.code == "authentication_error"
    assert validator.validate_token(long)
    clock.now += 10 * 365 * 86400
    assert validator.decode(forever).expires_at is None


@pytest.mark.parametrize("expires_in", [0, -5, float("inf"), float("nan")])
def test_non_positive_or_infinite_lifetime_rejected(expires_in: float) -> None:
    with pytest.raises(ValueError):
        TokenGenerator("s").create_token("u", expires_in=expires_in)


def test_tampered_token_rejected() -> None:
    token = TokenGenerator("s").create_token("user123")
    _payload, rest = token.split(".", 1)
    forged_payload = json.dumps({"sub": "admin"}).encode().hex()
    candidates = [
        # signature changed (not its last character: that one partly holds padding bits)
        token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:],
        forged_payload + "." + rest,  # payload swapped
        token + "x",
        "",
        "not-a-token",
        "a.b.c",
    ]
    validator = TokenValidator("s")
    for candidate in candidates:
        assert validator.validate_token(candidate) is False
        with pytest.raises(InvalidTokenError):
            validator.decode(candidate)


def test_validate_token_never_raises_on_wrong_types() -> None:
    validator = TokenValidator("s")
    for value in (None, 123, b"", ["x"]):
        assert validator.validate_token(value) is False  # type: ignore[arg-type]


def test_wrong_secret_rejected() -> None:
    token = TokenGenerator("secret-a").create_token("u")
    assert not TokenValidator("secret-b").validate_token(token)


def test_other_salt_rejected() -> None:
    ticket = TokenGenerator("s", salt="llamahome.ws-ticket.v1").create_token("u")
    assert not TokenValidator("s").validate_token(ticket)
    assert TokenValidator("s", salt="llamahome.ws-ticket.v1").validate_token(ticket)


def test_signed_payload_with_bad_claims_rejected() -> None:
    serializer = URLSafeTimedSerializer(
        "s", salt=TOKEN_SALT, signer_kwargs={"digest_method": hashlib.sha256}
    )
    payloads: list[object] = [
        {"sub": "u"},
        [1],
        {"sub": "u", "jti": "j", "iat": "x", "exp": None, "scp": [], "tier": "b"},
    ]
    for payload in payloads:
        with pytest.raises(InvalidTokenError):
            TokenValidator("s").decode(serializer.dumps(payload))


def test_key_rotation() -> None:
    old_token = TokenGenerator("old").create_token("u")
    rotated = ["old", "new"]
    assert TokenValidator(rotated).validate_token(old_token)
    new_token = TokenGenerator(rotated).create_token("u")
    assert TokenValidator("new").validate_token(new_token)
    assert not TokenValidator("old").validate_token(new_token)
    assert TokenValidator([b"old", "new"]).validate_token(new_token)


@pytest.mark.parametrize("key", ["", b"", [], ["ok", ""]])
def test_empty_keys_rejected(key: object) -> None:
    with pytest.raises(ValueError):
        TokenGenerator(key)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TokenValidator(key)  # type: ignore[arg-type]
