"""Ollama's clients against the real ``llamahomed start`` process: the sync ``ollama`` Python
client, LangChain's ``ChatOllama`` with structured output, and the npm ``ollama`` package under
``node --test``; SmolLM2 answers, the admin token rides in the clients' ``headers``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest
from pydantic import BaseModel

from tests.fixtures.daemon import RunningDaemon, start_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.smollm2]
SMOLLM2 = "smollm2-135m-instruct"
NODE, NPM = shutil.which("node"), shutil.which("npm")
JS_TESTS = Path(__file__).parent / "ollama_js"
OLLAMA_JS = "ollama@0.6.4"


@pytest.fixture(scope="module")
def chat_daemon(tmp_path_factory: pytest.TempPathFactory, smollm2_file: Path) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("ollama-daemon")
    store = root / "store"
    store.mkdir()
    os.link(smollm2_file, store / smollm2_file.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLAMAHOME_", "XDG_"))}
    env.update(LLAMAHOME_STATE_DIR=str(root / "state"), LLAMAHOME_DATA_DIR=str(root / "data"),
               LLAMAHOME_CONFIG_FILE=str(root / "config.toml"),
               LLAMAHOME_INSTALL_DEFAULT_MODEL="false",
               LLAMAHOME_MODEL_SETTINGS__DEFAULT_MODEL=SMOLLM2,
               LLAMAHOME_SYSTEM_SETTINGS__N_CTX="1024")
    with start_daemon(root / "daemon", env, args=["--models-dir", str(store)]) as daemon:
        yield daemon


def test_the_sync_python_client_as_a_user_points_it(chat_daemon: RunningDaemon) -> None:
    client = ollama.Client(host=chat_daemon.url,
                           headers={"Authorization": f"Bearer {chat_daemon.token}"})
    assert [m.model for m in client.list().models] == [f"{SMOLLM2}:latest"]
    parts = list(client.chat(model="smollm2", stream=True, options={"temperature": 0,
                                                                     "num_predict": 12},
                             messages=[{"role": "user",
                                        "content": "What is the capital of France?"}]))
    assert parts[-1].done and "paris" in "".join(p.message.content or "" for p in parts).lower()
    assert client.ps().models[0].context_length == 1024
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=chat_daemon.url).list()
    assert caught.value.status_code == 401


class City(BaseModel):
    name: str
    country: str


def close_chat_ollama(llm: object) -> None:
    """LangChain's ChatOllama never closes its ollama client's httpx connection pool; close it
    here, or its socket is collected (a ResourceWarning) in some later test."""
    inner = getattr(getattr(llm, "_client", None), "_client", None)
    if inner is not None:
        inner.close()


def test_langchain_chat_ollama_with_structured_output(chat_daemon: RunningDaemon) -> None:
    chat_ollama = pytest.importorskip("langchain_ollama").ChatOllama
    llm = chat_ollama(model=SMOLLM2, base_url=chat_daemon.url, temperature=0, num_predict=60,
                      client_kwargs={"headers": {"Authorization": f"Bearer {chat_daemon.token}"}})
    reply = llm.invoke("Say hello in French, one word.")
    assert reply.content and reply.response_metadata["done_reason"] in ("stop", "length")
    city = llm.with_structured_output(City, method="json_schema").invoke(
        "Paris is a city in France. Give its name and country as JSON.")
    assert isinstance(city, City) and city.name and city.country
    close_chat_ollama(llm)


@pytest.mark.skipif(NODE is None or NPM is None, reason="node and npm are not installed")
def test_the_npm_ollama_package_streams_a_chat(chat_daemon: RunningDaemon, tmp_path: Path) -> None:
    assert NODE is not None and NPM is not None
    shutil.copy(JS_TESTS / "chat.test.mjs", tmp_path / "chat.test.mjs")
    installed = subprocess.run([NPM, "install", "--no-audit", "--no-fund", "--prefix",
                                str(tmp_path), OLLAMA_JS], capture_output=True, text=True,
                               timeout=180, check=False)
    if installed.returncode != 0:
        pytest.skip(f"npm could not install {OLLAMA_JS}: {installed.stderr[-300:]}")
    env = {**os.environ, "LLAMAHOME_TEST_URL": chat_daemon.url,
           "LLAMAHOME_TEST_TOKEN": chat_daemon.token, "LLAMAHOME_TEST_CHAT_MODEL": SMOLLM2}
    result = subprocess.run([NODE, "--test", "chat.test.mjs"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=240, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    counts = {key: int(value) for key, value in re.findall(r"^# (\w+) (\d+)$", output, re.M)}
    assert counts["pass"] == 2 and counts["fail"] == 0, output


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.fixture
def tool_client(chat_daemon: RunningDaemon) -> Iterator[ollama.Client]:
    client = ollama.Client(host=chat_daemon.url,
                           headers={"Authorization": f"Bearer {chat_daemon.token}"})
    yield client
    client.close()


def test_a_forced_tool_call_comes_back_as_ollama_tool_calls(tool_client: ollama.Client) -> None:
    """``options.tool_choice`` (LlamaHome's extension) forces the call through the grammar."""
    client = tool_client
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = client.chat(model="smollm2", messages=ask, tools=[WEATHER], stream=False,
                        options={"temperature": 0, "num_predict": 60,
                                 "tool_choice": "get_weather"})
    calls = reply.message.tool_calls or []
    assert reply.done_reason == "stop" and len(calls) == 1
    assert calls[0].function.name == "get_weather"
    assert isinstance(calls[0].function.arguments["city"], str)
    parts = list(client.chat(model="smollm2", messages=ask, tools=[WEATHER], stream=True,
                             options={"temperature": 0, "num_predict": 60,
                                      "tool_choice": "required"}))
    streamed = [c for p in parts for c in (p.message.tool_calls or [])]
    assert parts[-1].done and streamed  # required: one call or more, each a whole chunk
    assert {c.function.name for c in streamed} == {"get_weather"}
    assert all(isinstance(c.function.arguments["city"], str) for c in streamed)


def test_a_tool_round_trip_through_the_history(tool_client: ollama.Client) -> None:
    client = tool_client
    history = [{"role": "user", "content": "What is the weather in Paris?"},
               {"role": "assistant", "content": "",
                "tool_calls": [{"function": {"name": "get_weather",
                                             "arguments": {"city": "Paris"}}}]},
               {"role": "tool", "tool_name": "get_weather", "content": "Sunny, 21 degrees"}]
    reply = client.chat(model="smollm2", messages=history, tools=[WEATHER], stream=False,
                        options={"temperature": 0, "num_predict": 30})
    assert reply.done and (reply.message.content or reply.message.tool_calls)
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="smollm2", messages=history[:1], stream=False,
                    tools=[{"type": "function", "function": {"name": "bad name!"}}])
    assert caught.value.status_code == 400 and "tools[0].function.name" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="smollm2", messages=history[:1], tools=[WEATHER],
                    options={"tool_choice": "nope"}, stream=False)
    assert caught.value.status_code == 400 and "tool_choice" in caught.value.error


def test_langchain_bind_tools(chat_daemon: RunningDaemon) -> None:
    langchain = pytest.importorskip("langchain_ollama")
    messages = pytest.importorskip("langchain_core.messages")
    llm = langchain.ChatOllama(
        model=SMOLLM2, base_url=chat_daemon.url, temperature=0, num_predict=60,
        client_kwargs={"headers": {"Authorization": f"Bearer {chat_daemon.token}"}})
    bound = llm.bind_tools([WEATHER])
    forced = bound.invoke("What is the weather in Rome?",
                          options={"temperature": 0, "num_predict": 60,
                                   "tool_choice": "get_weather"})
    assert [c["name"] for c in forced.tool_calls] == ["get_weather"]
    assert isinstance(forced.tool_calls[0]["args"]["city"], str)
    answer = bound.invoke([messages.HumanMessage("What is the weather in Rome?"), forced,
                           messages.ToolMessage("Rainy, 12 degrees",
                                                tool_call_id=forced.tool_calls[0]["id"])])
    assert answer.response_metadata["done_reason"] in ("stop", "length")
    close_chat_ollama(llm)


def test_logprobs_with_the_python_client(tool_client: ollama.Client) -> None:
    """``logprobs`` / ``top_logprobs`` on generate and chat, streamed and not, in Ollama's shape
    (the client's typed ``Logprob`` entries): one per generated token, lined up with the text."""
    client = tool_client
    reply = client.generate(model="smollm2", prompt="Name a colour.", logprobs=True,
                            top_logprobs=3, options={"temperature": 0, "num_predict": 6,
                                                             "repeat_penalty": 1.0})
    entries = reply.logprobs or []
    assert len(entries) == reply.eval_count
    assert "".join(e.token for e in entries) == reply.response
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top_logprobs or []) == 3
        assert entry.top_logprobs[0].token == entry.token  # greedy, no penalty: the likeliest
    parts = list(client.chat(model="smollm2", messages=[{"role": "user", "content": "Hi"}],
                             stream=True, logprobs=True,
                             options={"temperature": 0, "num_predict": 5}))
    streamed = [e for p in parts for e in (p.logprobs or [])]
    assert len(streamed) == parts[-1].eval_count
    assert "".join(e.token for e in streamed) == "".join(p.message.content for p in parts)
