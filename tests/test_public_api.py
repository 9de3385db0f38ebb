"""The import paths the API guide promises exist and export what the docs name."""

from __future__ import annotations

import importlib

import pytest

PROMISED = {
    "llamahome.client": ["APIClient", "LlamaClient", "PooledClient", "SyncClient"],
    "llamahome.auth": ["TokenGenerator", "TokenValidator"],
    "llamahome.error": ["APIError", "RateLimitError", "AuthenticationError", "RetryHandler",
                        "CircuitBreaker", "ModelTooLargeError", "TooManyStreamsError"],
    "llamahome.codes": ["CODES", "ErrorCode", "RETRYABLE_STATUSES", "is_retryable"],
    "llamahome.server": ["LlamaServer"],
    "llamahome.security": ["RateLimiter", "AdvancedRateLimiter"],
}


@pytest.mark.parametrize("module", sorted(PROMISED))
def test_promised_names_are_exported(module: str) -> None:
    mod = importlib.import_module(module)
    for name in PROMISED[module]:
        assert name in mod.__all__, f"{module}.{name} missing from __all__"
        assert getattr(mod, name) is not None


def test_the_guides_token_example_runs() -> None:
    from llamahome.auth import TokenGenerator, TokenValidator

    generator = TokenGenerator(secret_key="your-secret")
    token = generator.create_token(user_id="user123", expires_in=3600)
    assert TokenValidator(secret_key="your-secret").validate_token(token) is True
    assert TokenValidator(secret_key="other-secret").validate_token(token) is False


def test_the_daemon_and_the_client_share_one_token_implementation() -> None:
    import llamahome.auth
    import llamahomed.core.authority

    assert llamahomed.core.authority.TokenValidator is llamahome.auth.TokenValidator
