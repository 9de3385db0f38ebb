"""The daemon's signing keys, its token store and the checks every request goes through.

Keys live in ``<state_dir>/secret.key`` (mode 0600), one per line, **newest first**: the first
key signs new tokens, every key verifies. ``llamahomed token rotate-secret`` puts a new key first
and keeps the older ones while a live token signed by them exists (the token store knows which
key signed each token it issued), so rotating logs nobody out before their token expires.

The running daemon notices a changed key file (inode, size and mtime: one ``stat`` per request)
and a changed token store (``PRAGMA data_version``), so ``token create``, ``token revoke`` and
``token rotate-secret`` take effect without a restart.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llamahome.auth import TokenClaims, TokenGenerator, TokenValidator
from llamahome.error import AuthenticationError as ClientAuthError
from llamahome.error import ExpiredTokenError

from llamahomed.core.errors import AuthenticationFailed, InvalidRequest, ServerBusy
from llamahomed.core.files import atomic_write
from llamahomed.core.revocation import IssuedToken, TokenStore
from llamahomed.core.settings import TIER_NAME, TIER_NAME_RULE, Settings

ADMIN_SCOPES = ("admin", "inference")
KNOWN_SCOPES = frozenset(ADMIN_SCOPES)
ADMIN_USER = "local-admin"

_USER_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")


def key_id(key: str) -> str:
    """A short public fingerprint of a key (never the key)."""
    return hashlib.sha256(b"llamahome.key-id\0" + key.encode()).hexdigest()[:12]


def read_keys(path: Path) -> list[str]:
    """The keys in the key file, newest first (empty list if there is none)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def write_keys(path: Path, keys: Sequence[str]) -> None:
    atomic_write(path, "".join(f"{k}\n" for k in keys).encode(), mode=0o600)


def new_key() -> str:
    return secrets.token_urlsafe(32)


def load_or_create_secret(path: Path) -> str:
    """The signing key (the newest), created (256 random bits, mode 0600) on first start."""
    keys = read_keys(path)
    if keys:
        return keys[0]
    key = new_key()
    write_keys(path, [key])
    return key


def check_token_fields(user_id: str, scopes: Sequence[str], tier: str) -> None:
    """Refuse what a token must not carry (unknown scopes, odd tiers, control characters)."""
    if not _USER_RE.match(user_id):
        raise InvalidRequest("the user must be 1 to 128 printable characters")
    unknown = sorted(set(scopes) - KNOWN_SCOPES)
    if unknown or not scopes:
        raise InvalidRequest(f"scopes must be among {sorted(KNOWN_SCOPES)}; got {list(scopes)}")
    if not TIER_NAME.fullmatch(tier):
        raise InvalidRequest(TIER_NAME_RULE)


@dataclass(frozen=True)
class Rotation:
    """What ``rotate`` did: the new key's id and, per older key, until when it is kept."""

    new_key_id: str
    kept: dict[str, float]
    dropped: list[str]


class Authority:
    """Issues, records and checks bearer tokens with the daemon's keys."""

    def __init__(self, key_file: Path, store: TokenStore) -> None:
        self.key_file = key_file
        self.store = store
        self._stamp: tuple[int, int, int] | None = None
        self._keys: list[str] = []
        self.generator: TokenGenerator
        self.validator: TokenValidator
        load_or_create_secret(key_file)
        self._reload_keys()

    @classmethod
    def from_settings(cls, settings: Settings) -> Authority:
        return cls(settings.secret_file, TokenStore(settings.token_store_file))

    def close(self) -> None:
        self.store.close()

    # -- keys -----------------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        """The keys, newest first (reloaded if the key file changed)."""
        self._reload_keys()
        return list(self._keys)

    def _reload_keys(self) -> None:
        try:
            stat = os.stat(self.key_file)
        except FileNotFoundError:
            return  # keep the keys we have; a deleted key file does not log everyone out
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # a rewrite is a new inode
        if stamp == self._stamp:
            return
        keys = read_keys(self.key_file)
        if not keys:
            return
        self._keys, self._stamp = keys, stamp
        oldest_first = list(reversed(keys))  # itsdangerous signs with the last key
        self.generator = TokenGenerator(secret_key=oldest_first)
        self.validator = TokenValidator(secret_key=oldest_first)

    def rotate(self, *, drop_old: bool = False) -> Rotation:
        """Put a new key first; keep older keys only while live tokens they signed exist."""
        old = self.keys
        key = new_key()
        kept, dropped = self._needed(old, drop_old=drop_old)
        write_keys(self.key_file, [key, *[k for k in old if key_id(k) in kept]])
        self._reload_keys()
        return Rotation(key_id(key), kept, dropped)

    def prune_keys(self) -> list[str]:
        """Drop older keys no live token needs any more (and revocations of expired tokens);
        return the dropped keys' ids."""
        self.store.prune()
        keys = self.keys
        kept, dropped = self._needed(keys[1:], drop_old=False)
        if dropped:
            write_keys(self.key_file, [keys[0], *[k for k in keys[1:] if key_id(k) in kept]])
            self._reload_keys()
        return dropped

    def _needed(self, keys: Sequence[str], *, drop_old: bool) -> tuple[dict[str, float], list[str]]:
        kept: dict[str, float] = {}
        dropped: list[str] = []
        now = time.time()
        for key in keys:
            until = self.store.key_needed_until(key_id(key))
            if not drop_old and until > now:
                kept[key_id(key)] = until
            else:
                dropped.append(key_id(key))
        return kept, dropped

    # -- tokens ---------------------------------------------------------------------------
    def issue(self, user_id: str, expires_in: float | None, scopes: Sequence[str] = ("inference",),
              tier: str = "basic") -> str:
        """A new signed token, recorded (never stored) in the token store."""
        check_token_fields(user_id, scopes, tier)
        if expires_in is not None and not (math.isfinite(expires_in) and expires_in > 0):
            raise InvalidRequest("expires_in must be a positive number of seconds (or none)")
        token: str = self.generator.create_token(user_id, expires_in, scopes=tuple(scopes),
                                                 tier=tier)
        self.store.record(self.validator.decode(token), key_id(self.keys[0]))
        return token

    def decode(self, token: str) -> TokenClaims:
        """The claims of a valid, unrevoked token, or AuthenticationFailed."""
        self._reload_keys()
        try:
            claims = self.validator.decode(token)
        except ExpiredTokenError as exc:
            raise AuthenticationFailed("the token has expired; ask for a new one",
                                       error="invalid_token") from exc
        except ClientAuthError as exc:
            raise AuthenticationFailed(f"invalid token: {exc.message}", error="invalid_token") from exc
        self.recheck(claims)
        return claims

    def recheck(self, claims: TokenClaims) -> None:
        """AuthenticationFailed if claims accepted earlier have since expired or been revoked
        (a WebSocket checks its token this way before each request message; microseconds)."""
        if claims.expires_at is not None and claims.expires_at <= time.time():
            raise AuthenticationFailed("the token has expired; ask for a new one",
                                       error="invalid_token")
        try:
            reason = self.store.revocation_reason(claims)
        except sqlite3.Error as exc:  # fail closed: never serve a token we could not check
            raise ServerBusy(f"the token store cannot be read right now ({exc}); try again",
                             details={"retry_after": 1}, headers={"Retry-After": "1"}) from exc
        if reason is not None:
            raise AuthenticationFailed(f"the token is revoked: {reason}", error="invalid_token",
                                       details={"token_id": claims.token_id})

    def check(self, header: str | None) -> TokenClaims:
        """The claims of a request's ``Authorization: Bearer`` token, or AuthenticationFailed."""
        if not header:
            raise AuthenticationFailed("missing bearer token: send 'Authorization: Bearer <token>'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("the Authorization header must be 'Bearer <token>'",
                                       error="invalid_request")
        return self.decode(token.strip())

    def issued(self) -> list[IssuedToken]:
        return self.store.issued()


def ensure_admin_token(settings: Settings, authority: Authority) -> Path:
    """Write an admin token for the local user (0600) unless a valid one is already there."""
    path = settings.admin_token_file
    if path.exists():
        try:
            authority.decode(path.read_text().strip())
            return path
        except AuthenticationFailed:
            pass
    token = authority.issue(ADMIN_USER, None, ADMIN_SCOPES, "enterprise")
    atomic_write(path, (token + "\n").encode(), mode=0o600)
    return path


def revoke_admin_token(settings: Settings, authority: Authority) -> None:
    """Revoke the token in the admin token file (before a rotation renews it)."""
    path = settings.admin_token_file
    try:
        authority.store.revoke(authority.validator.decode(path.read_text().strip()).token_id)
    except (OSError, ClientAuthError):
        pass
