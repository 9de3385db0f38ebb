"""Signed, expiring API tokens, shared by the daemon and its users.

A token is an itsdangerous ``URLSafeTimedSerializer`` dump of the payload
``{"sub", "jti", "iat", "exp", "scp", "tier"}``, signed with HMAC-SHA256 under
the purpose salt :data:`TOKEN_SALT`::

    generator = TokenGenerator(secret_key="your-secret")
    token = generator.create_token(user_id="user123", expires_in=3600)

    validator = TokenValidator(secret_key="your-secret")
    validator.validate_token(token)   # True / False, never raises
    validator.decode(token)           # TokenClaims, or InvalidTokenError / ExpiredTokenError

``secret_key`` may be a list of keys for rotation: the last one signs, every
one is accepted when verifying. Each token carries its own lifetime in ``exp``
(``None``: it never expires); itsdangerous's own ``max_age`` is not used.
Tokens are only ever checked by itsdangerous's signature verification, which
compares in constant time.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from itsdangerous import BadData, URLSafeTimedSerializer

from .error import ExpiredTokenError, InvalidTokenError

__all__ = [
    "TOKEN_SALT",
    "SecretKey",
    "TokenClaims",
    "TokenGenerator",
    "TokenValidator",
]

TOKEN_SALT = "llamahome.api-token.v1"
"""The itsdangerous salt that scopes signatures to API tokens."""

SecretKey = str | bytes | Sequence[str | bytes]
"""One secret, or a list of secrets oldest first (the last one signs)."""

_Clock = Callable[[], float]


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says."""

    user_id: str
    token_id: str
    """The token's ``jti``: 32 random hex digits, for revocation lists."""
    issued_at: float
    expires_at: float | None
    scopes: tuple[str, ...]
    tier: str

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def _key_list(secret_key: SecretKey) -> list[bytes]:
    """The keys as bytes, oldest first (itsdangerous encodes str keys as UTF-8 too)."""
    keys = [secret_key] if isinstance(secret_key, (str, bytes)) else list(secret_key)
    if not keys:
        raise ValueError("secret_key must not be an empty list")
    if not all(isinstance(key, (str, bytes)) and key for key in keys):
        raise ValueError("every secret key must be a non-empty str or bytes")
    return [key.encode("utf-8") if isinstance(key, str) else key for key in keys]


class _Signer:
    """Holds the serializer configuration that both ends must agree on."""

    def __init__(self, secret_key: SecretKey, *, salt: str, clock: _Clock) -> None:
        self._serializer = URLSafeTimedSerializer(
            _key_list(secret_key),
            salt=salt,
            signer_kwargs={"digest_method": hashlib.sha256},
        )
        self._clock = clock


class TokenGenerator(_Signer):
    """Issue signed API tokens.

    ``salt`` separates token purposes (API tokens, WebSocket tickets, ...): a
    token signed for one salt never validates for another.
    """

    def __init__(
        self,
        secret_key: SecretKey,
        *,
        salt: str = TOKEN_SALT,
        clock: _Clock = time.time,
    ) -> None:
        super().__init__(secret_key, salt=salt, clock=clock)

    def create_token(
        self,
        user_id: str,
        expires_in: float | None = 3600.0,
        *,
        scopes: Sequence[str] = ("inference",),
        tier: str = "basic",
    ) -> str:
        """Return a new token for ``user_id`` valid for ``expires_in`` seconds.

        ``expires_in=None`` issues a token that never expires.
        """
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        if expires_in is not None and not (math.isfinite(expires_in) and expires_in > 0):
            raise ValueError("expires_in must be a positive number of seconds, or None")
        if isinstance(scopes, str) or not all(isinstance(s, str) for s in scopes):
            raise ValueError("scopes must be a sequence of strings")
        now = self._clock()
        payload = {
            "sub": user_id,
            "jti": secrets.token_hex(16),
            "iat": now,
            "exp": None if expires_in is None else now + expires_in,
            "scp": list(scopes),
            "tier": tier,
        }
        return self._serializer.dumps(payload)


class TokenValidator(_Signer):
    """Check tokens issued by :class:`TokenGenerator` with the same key(s) and salt."""

    def __init__(
        self,
        secret_key: SecretKey,
        *,
        salt: str = TOKEN_SALT,
        clock: _Clock = time.time,
    ) -> None:
        super().__init__(secret_key, salt=salt, clock=clock)

    def decode(self, token: str) -> TokenClaims:
        """Verify ``token`` and return its claims.

        Raises :class:`~llamahome.error.InvalidTokenError` for a bad signature or
        payload and :class:`~llamahome.error.ExpiredTokenError` once ``exp`` has
        passed.
        """
        if not isinstance(token, (str, bytes)) or not token:
            raise InvalidTokenError("token must be a non-empty string")
        try:
            payload = self._serializer.loads(token)
        except BadData as exc:
            raise InvalidTokenError("token signature or format is invalid") from exc
        except (ValueError, TypeError) as exc:
            raise InvalidTokenError("token is malformed") from exc
        claims = _claims(payload)
        if claims.expires_at is not None and self._clock() >= claims.expires_at:
            raise ExpiredTokenError("token has expired", details={"expired_at": claims.expires_at})
        return claims

    def validate_token(self, token: str) -> bool:
        """Return whether ``token`` is validly signed and unexpired; never raises."""
        try:
            self.decode(token)
        except (InvalidTokenError, ExpiredTokenError):
            return False
        return True


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _claims(payload: Any) -> TokenClaims:
    if not isinstance(payload, Mapping):
        raise InvalidTokenError("token payload is not an object")
    sub, jti, iat, exp = (payload.get(k) for k in ("sub", "jti", "iat", "exp"))
    scopes, tier = payload.get("scp"), payload.get("tier")
    if (
        not isinstance(sub, str)
        or not isinstance(jti, str)
        or not _number(iat)
        or not (exp is None or _number(exp))
        or not isinstance(scopes, list)
        or not all(isinstance(s, str) for s in scopes)
        or not isinstance(tier, str)
    ):
        raise InvalidTokenError("token payload is missing or has malformed claims")
    return TokenClaims(
        user_id=sub,
        token_id=jti,
        issued_at=float(iat),
        expires_at=None if exp is None else float(exp),
        scopes=tuple(scopes),
        tier=tier,
    )
