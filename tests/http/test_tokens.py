"""POST /tokenize and /detokenize (llama-server's shapes) through the real worker's vocabulary
(the tiny model; special tokens on SmolLM2 in test_chat_default.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.http import post


async def test_tokenize_and_detokenize_round_trip(api: Any, auth: dict[str, str]) -> None:
    text = "the cat sat on the mat, ünïcode too"
    tokens = (await post(api, auth, "/tokenize", {"content": text}))["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    assert (await post(api, auth, "/detokenize", {"tokens": tokens})) == {"content": text}


async def test_add_special_adds_the_bos_token(api: Any, auth: dict[str, str]) -> None:
    plain = (await post(api, auth, "/tokenize", {"content": "hello"}))["tokens"]
    special = (await post(api, auth, "/tokenize", {"content": "hello", "add_special": True}))["tokens"]
    assert special[1:] == plain and len(special) == len(plain) + 1


async def test_the_process_prompt_count_matches_tokenize(api: Any, auth: dict[str, str]) -> None:
    """The untemplated tiny model: a native prompt goes verbatim, BOS added."""
    prompt = "one two three four"
    counted = (await post(api, auth, "/tokenize", {"content": prompt, "add_special": True}))
    done = await post(api, auth, "/api/v1/process", {"prompt": prompt, "max_tokens": 1})
    assert done["usage"]["prompt_tokens"] == len(counted["tokens"])


async def test_with_pieces_gives_each_tokens_text(api: Any, auth: dict[str, str]) -> None:
    text = "hello world"
    data = await post(api, auth, "/tokenize", {"content": text, "with_pieces": True})
    ids = (await post(api, auth, "/tokenize", {"content": text}))["tokens"]
    assert [t["id"] for t in data["tokens"]] == ids
    pieces = [t["piece"] for t in data["tokens"]]
    assert all(isinstance(p, (str, list)) for p in pieces)
    assert "".join(p for p in pieces if isinstance(p, str)).replace("\u2581", " ").strip() == text


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("/detokenize", {"tokens": [10**9]}, 400, "invalid_request"),
    ("/detokenize", {"tokens": [-1]}, 422, "validation_error"),
    ("/detokenize", {"tokens": [True]}, 422, "validation_error"),
    ("/detokenize", {"tokens": "1 2"}, 422, "validation_error"),
    ("/tokenize", {"content": 5}, 422, "validation_error"),
    ("/tokenize", {"text": "x"}, 422, "validation_error"),
    ("/tokenize", {"content": "x", "model": "no-such-model"}, 404, "model_not_found"),
])
async def test_bad_input_is_an_error_in_the_envelope(api: Any, auth: dict[str, str], path: str,
                                                    body: dict[str, Any], status: int,
                                                    code: str) -> None:
    data = await post(api, auth, path, body, status)
    assert set(data["error"]) == {"code", "message", "details"}
    assert data["error"]["code"] == code


async def test_tokenizing_needs_a_token(api: Any) -> None:
    response = await api.post("/tokenize", json={"content": "x"})
    assert response.status == 401
