"""The typed load config and the typed worker events, on both sides of the pipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from llamahomed.core.errors import ModelLoadFailed
from llamahomed.core.settings import SystemSettings
from llamahomed.engine.config import LoadConfig
from llamahomed.engine.handle import WorkerHandle
from llamahomed.engine.protocol import (Accepted, Done, Failed, ProtocolError, Text, empty_usage,
                                        parse_event)


def test_the_worker_defaults_are_the_settings_defaults() -> None:
    """The engine is the setting's default; slots are planned per load (setting None), 8 for
    a config built by hand, the planner's base count."""
    from llamahomed.planner.choose import BASE_SLOTS

    config = LoadConfig(model_path="/m.gguf", n_ctx=512)
    system = SystemSettings()
    assert config.engine == system.engine == "batched"
    assert system.n_slots is None and config.n_slots == BASE_SLOTS == 8


@pytest.mark.parametrize("bad", [{"n_slots": 0}, {"n_slots": 257}, {"engine": "turbo"},
                                 {"n_ctx": 0}, {"surprise": 1}, {"model_path": ""}])
def test_an_invalid_load_config_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LoadConfig.from_wire({"model_path": "/m.gguf", "n_ctx": 512, **bad})


def test_the_wire_form_round_trips() -> None:
    config = LoadConfig(model_id="m", model_path="/m.gguf", n_ctx=512, n_threads=2, kv_type="q8_0")
    assert LoadConfig.from_wire(config.to_wire()) == config
    assert LoadConfig.from_wire(config) is config


async def test_the_worker_validates_the_config_again_before_llama_cpp_runs(
        tiny_model_file: Path) -> None:
    """A config the daemon did not validate (built without checks) is refused by the worker."""
    unchecked = LoadConfig.model_construct(**{**LoadConfig(model_path=str(tiny_model_file),
                                                           n_ctx=256).model_dump(), "n_slots": 0})
    worker = WorkerHandle(unchecked)
    with pytest.raises(ModelLoadFailed, match="invalid load config"):
        await worker.start(60)


@pytest.mark.parametrize("event", [
    Accepted(3, 12), Text(3, "héllo", 2), Text(3, "", 0),
    Done(3, "length", empty_usage(12, 4), {"decode_ms": 5.0}, {"hit_tokens": 0, "source": ""},
         request_id="r1"),
    Done(4, "stop", empty_usage(7), embeddings=[[0.5, 0.5]]),
    Failed(3, "context_length_exceeded", "too long", {"prompt_tokens": 300}, "r2"),
])
def test_every_event_reads_back_as_what_was_sent(event: object) -> None:
    assert parse_event(event.wire()) == event  # type: ignore[attr-defined]


def test_an_unknown_event_kind_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        parse_event({"seq": 1, "kind": "telepathy"})


def test_speculative_defaults_and_bounds() -> None:
    config = LoadConfig(model_path="/m.gguf", n_ctx=512)
    system = SystemSettings()
    assert (config.speculative, config.draft_max) == (system.speculative, system.draft_max)
    assert (system.speculative, system.draft_max) == ("ngram", 8)
    for bad in ({"speculative": "eagle"}, {"draft_max": 0}, {"draft_max": 33}):
        with pytest.raises(ValidationError):
            LoadConfig.from_wire({"model_path": "/m.gguf", "n_ctx": 512, **bad})


async def test_the_daemon_loads_with_the_speculative_settings(
        aiohttp_client: Any, make_settings: Any) -> None:
    """``system_settings.speculative`` reaches the worker: it drafts, and the text is the same."""
    from llamahomed.http.app import create_app
    from llamahomed.http.keys import INFERENCE

    body = {"prompt": "the cat sat on the mat and looked at the dog " * 6, "max_tokens": 24,
            "temperature": 0, "repeat_penalty": 1.0}
    texts = []
    for mode in ("off", "ngram"):
        settings = make_settings(system_settings={"speculative": mode, "draft_max": 6})
        api = await aiohttp_client(create_app(settings))
        auth = {"Authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}
        answer = await api.post("/api/v1/process", headers=auth, json=body)
        assert answer.status == 200, await answer.text()
        texts.append((await answer.json())["text"])
        worker = api.server.app[INFERENCE].pool.workers()["tiny-llama"]
        assert (worker.config.speculative, worker.config.draft_max) == (mode, 6)
        assert worker.info["draft_max"] == (6 if mode == "ngram" else 0)
        await api.close()
    assert texts[0] == texts[1] and texts[0]
