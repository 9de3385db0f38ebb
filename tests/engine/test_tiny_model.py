"""Load the generated tiny GGUF models in real llama-cpp-python."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_cpp import Llama

from tests.fixtures import tiny_gguf as tiny

TEXT = "Hello world, ünïcödé ☃"
N_BYTE_TOKENS = 256
FIRST_BYTE_ID = 3  # after <unk>, <s>, </s>


def _is_byte_token(token: int) -> bool:
    return FIRST_BYTE_ID <= token < FIRST_BYTE_ID + N_BYTE_TOKENS


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.gguf"
    tiny.write_tiny_llama(path, chat_template=tiny.DEFAULT_CHAT_TEMPLATE)
    return path


@pytest.fixture(scope="module")
def llm(model_path: Path) -> Iterator[Llama]:
    model = Llama(model_path=str(model_path), n_ctx=256, verbose=False)
    yield model
    model.close()


def _greedy(model: Llama, prompt: str, max_tokens: int = 20) -> dict[str, object]:
    out = model.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_k=1)
    assert isinstance(out, dict)
    choice = out["choices"][0]
    return {"text": choice["text"], "finish_reason": choice["finish_reason"],
            "completion_tokens": out["usage"]["completion_tokens"]}


def test_load_is_fast(model_path: Path) -> None:
    start = time.perf_counter()
    model = Llama(model_path=str(model_path), n_ctx=256, verbose=False)
    elapsed = time.perf_counter() - start
    model.close()
    assert elapsed < 2.0  # typically ~10 ms


def test_vocab_and_context(llm: Llama) -> None:
    assert llm.n_vocab() == len(tiny.build_vocab()[0])
    assert llm.n_ctx() == 256
    assert llm.token_bos() == 1 and llm.token_eos() == 2
    assert llm.metadata["tokenizer.chat_template"] == tiny.DEFAULT_CHAT_TEMPLATE


def test_utf8_roundtrip_uses_byte_tokens(llm: Llama) -> None:
    tokens = llm.tokenize(TEXT.encode())
    assert tokens[0] == llm.token_bos()
    assert llm.detokenize(tokens).decode() == TEXT
    snowman = llm.tokenize("☃".encode(), add_bos=False)
    assert [t for t in snowman if _is_byte_token(t)] == [t + FIRST_BYTE_ID for t in "☃".encode()]
    words = llm.tokenize(b"Hello world", add_bos=False)
    assert len(words) == 2 and not any(_is_byte_token(t) for t in words)


def test_arbitrary_english_tokenizes(llm: Llama) -> None:
    text = "The quick brown fox jumps over the lazy dog; it's 42 degrees!\n"
    tokens = llm.tokenize(text.encode(), add_bos=False)
    assert llm.detokenize(tokens).decode() == " " + text  # SPM adds a prefix space
    assert len(tokens) < len(text)


def test_greedy_generation_is_deterministic_and_varied(llm: Llama) -> None:
    first = _greedy(llm, "The quick brown fox")
    second = _greedy(llm, "The quick brown fox")
    assert first == second
    assert first["completion_tokens"] == 20 and first["finish_reason"] == "length"
    tokens = llm.tokenize(str(first["text"]).encode(), add_bos=False)
    assert len(set(tokens)) >= 5


def test_greedy_never_emits_eos(llm: Llama) -> None:
    result = _greedy(llm, "Hello", max_tokens=100)
    assert result["finish_reason"] == "length" and result["completion_tokens"] == 100


def test_chat_completion_with_template(llm: Llama) -> None:
    out = llm.create_chat_completion(messages=[{"role": "user", "content": "Hi"}],
                                     max_tokens=8, temperature=0.0)
    assert isinstance(out, dict)
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 8


def test_pooling_model_embeds(tmp_path: Path) -> None:
    path = tiny.write_tiny_llama(tmp_path / "pool.gguf", pooling=True)
    model = Llama(model_path=str(path), n_ctx=256, embedding=True, verbose=False)
    vector = model.embed("hello world")
    model.close()
    assert isinstance(vector, list) and len(vector) == 64


_SUBPROCESS_CHECK = textwrap.dedent("""
    import sys
    from llama_cpp import Llama
    llm = Llama(model_path=sys.argv[1], n_ctx=256, verbose=False)
    out = llm.create_completion("Hello world", max_tokens=20, temperature=0.0, top_k=1)
    assert out["usage"]["completion_tokens"] == 20, out
    assert llm.detokenize(llm.tokenize(sys.argv[2].encode())).decode() == sys.argv[2]
    print("ok")
""")


@pytest.mark.parametrize("kwargs", [
    {"ftype": "f16"},
    {"ftype": "q8_0"},
    {"n_embd": 256, "n_layer": 4, "n_ff": 512},
], ids=["f16", "q8_0", "bigger"])
def test_variants_load_and_generate(tmp_path: Path, kwargs: dict[str, object]) -> None:
    """Run in a subprocess: a llama.cpp built with unusable CPU features (e.g. AMX
    in a VM) dies with SIGILL on quantized matmuls, which must fail this test
    rather than kill the whole test session."""
    path = tiny.write_tiny_llama(tmp_path / "variant.gguf", **kwargs)
    proc = subprocess.run([sys.executable, "-c", _SUBPROCESS_CHECK, str(path), TEXT],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, (
        f"exit {proc.returncode} (-4 = SIGILL: llama.cpp built for CPU features this "
        f"machine cannot run, e.g. AMX)\n{proc.stderr[-2000:]}")
