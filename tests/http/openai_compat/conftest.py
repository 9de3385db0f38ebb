"""One real ``llamahomed`` process for the OpenAI-compatibility suite, shared by every module in
this folder (a daemon start and each model's load are paid once), and the clients that drive it:
the official ``openai`` SDK, unmodified, and raw HTTP (httpx) for the shape checks.

The store holds the tiny random Llama (no chat template), the same with a ChatML template, the
tiny Llama that declares mean pooling, and the embedded Gemma 3 270M (a base model, real text,
a 262k vocabulary) and SmolLM2 135M Instruct (a real chat template). Every model loads with a
1024-token context, so the limits the tests probe are known.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fixtures.daemon import RunningDaemon, dirs_env, start_daemon
from tests.fixtures.tiny_gguf import DEFAULT_CHAT_TEMPLATE, write_tiny_llama

TINY = "tiny-llama"          # no chat template: /v1/completions only
CHAT = "tiny-chat"           # ChatML template: the mechanics of /v1/chat/completions
POOLED = "tiny-embed"        # declares llama.pooling_type = MEAN
GEMMA = "gemma3-270m"        # real text, big vocabulary, no chat template
SMOL = "smollm2-135m-instruct"  # a real chat template
N_CTX = 1024


@pytest.fixture(scope="package")
def store(tmp_path_factory: pytest.TempPathFactory, gemma_file: Path,
          smollm2_file: Path) -> Path:
    """The model store: three tiny models written here, the embedded two hard-linked."""
    directory = tmp_path_factory.mktemp("openai-compat") / "models"
    directory.mkdir()
    write_tiny_llama(directory / f"{TINY}.gguf", name=TINY, n_ctx=2048)
    write_tiny_llama(directory / f"{CHAT}.gguf", name=CHAT, n_ctx=2048,
                     chat_template=DEFAULT_CHAT_TEMPLATE)
    write_tiny_llama(directory / f"{POOLED}.gguf", name=POOLED, n_ctx=2048, pooling=True)
    os.link(gemma_file, directory / gemma_file.name)
    os.link(smollm2_file, directory / smollm2_file.name)
    return directory


@pytest.fixture(scope="package")
def daemon(store: Path) -> Iterator[RunningDaemon]:
    root = store.parent
    env = dirs_env(root, store, TINY)
    env["LLAMAHOME_SYSTEM_SETTINGS__N_CTX"] = str(N_CTX)
    # hundreds of requests in a row from one token: the limits are tested in tests/security
    env["LLAMAHOME_RATE_LIMITS__ENABLED"] = "false"
    with start_daemon(root, env, timeout=120) as running:
        yield running


@pytest.fixture(scope="package")
def sdk(daemon: RunningDaemon) -> Iterator[openai.OpenAI]:
    """The official OpenAI SDK on the daemon's ``/v1`` with the admin token."""
    client = openai.OpenAI(base_url=f"{daemon.url}/v1", api_key=daemon.token, max_retries=0,
                           timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="package")
def http(daemon: RunningDaemon) -> Iterator[httpx.Client]:
    """Raw HTTP to the daemon with the admin token (for the wire shapes the SDK hides)."""
    with httpx.Client(base_url=daemon.url, headers=daemon.headers, timeout=120) as client:
        yield client


@pytest.fixture(scope="package")
def model_path(store: Path) -> dict[str, Path]:
    """Each model id's GGUF file, for the reference computations."""
    paths = {p.stem: p for p in store.glob("*.gguf")}
    gemma = next(p for p in store.glob("*.gguf") if p.name.startswith("gemma"))
    smol = next(p for p in store.glob("*.gguf") if p.name.startswith("SmolLM2"))
    return {**paths, GEMMA: gemma, SMOL: smol}
