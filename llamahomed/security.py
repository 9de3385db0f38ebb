"""The daemon's secret and its first admin token, both in 0600 files in the state dir."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from llamahome.auth import TokenClaims, TokenGenerator, TokenValidator
from llamahome.error import AuthenticationError as ClientAuthError

from llamahomed.config_store import atomic_write
from llamahomed.errors import AuthenticationFailed
from llamahomed.settings import Settings

ADMIN_SCOPES = ("admin", "inference")


def load_or_create_secret(path: Path) -> str:
    """The signing secret, created (256 random bits, mode 0600) on first start."""
    if path.exists():
        secret = path.read_text().strip()
        if secret:
            return secret
    secret = secrets.token_urlsafe(32)
    atomic_write(path, (secret + "\n").encode(), mode=0o600)
    return secret


@dataclass
class Authority:
    """Issues and checks bearer tokens with the daemon's secret."""

    generator: TokenGenerator
    validator: TokenValidator

    @classmethod
    def from_settings(cls, settings: Settings) -> Authority:
        secret = load_or_create_secret(settings.secret_file)
        return cls(TokenGenerator(secret_key=secret), TokenValidator(secret_key=secret))

    def check(self, header: str | None) -> TokenClaims:
        """The claims of a request's ``Authorization: Bearer`` token, or AuthenticationFailed."""
        if not header:
            raise AuthenticationFailed("missing bearer token: send 'Authorization: Bearer <token>'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("the Authorization header must be 'Bearer <token>'")
        try:
            return self.validator.decode(token.strip())
        except ClientAuthError as exc:
            raise AuthenticationFailed(f"invalid token: {exc.message}") from exc


def ensure_admin_token(settings: Settings, authority: Authority) -> Path:
    """Write an admin token for the local user (0600) unless a valid one is already there."""
    path = settings.admin_token_file
    if path.exists() and authority.validator.validate_token(path.read_text().strip()):
        return path
    token = authority.generator.create_token(user_id="local-admin", expires_in=None,
                                             scopes=ADMIN_SCOPES, tier="enterprise")
    atomic_write(path, (token + "\n").encode(), mode=0o600)
    return path
