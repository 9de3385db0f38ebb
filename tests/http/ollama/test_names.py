"""Ollama's names and durations onto LlamaHome's: pure functions, no model needed."""

from __future__ import annotations

import pytest

from llamahomed.core.errors import InvalidRequest
from llamahomed.http.handlers.ollama.names import spellings, store_name
from llamahomed.http.handlers.ollama.schemas import FOREVER, GenerateRequest, keep_alive_seconds


@pytest.mark.parametrize(("given", "seconds"), [
    (None, None), (0, 0.0), ("0", 0.0), (300, 300.0), (2.5, 2.5), ("300", 300.0),
    ("5m", 300.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("250ms", 0.25), ("0s", 0.0),
    (-1, FOREVER), ("-1", FOREVER), ("-5m", FOREVER), ("-1ns", FOREVER)])
def test_keep_alive_is_seconds_or_a_go_duration_negative_meaning_forever(
        given: float | str | None, seconds: float | None) -> None:
    assert keep_alive_seconds(given) == seconds


@pytest.mark.parametrize("bad", ["soon", "5 m", "5mm", "m", "", "1h-5m", True])
def test_a_keep_alive_that_is_no_duration_is_a_400_naming_the_field(bad: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        keep_alive_seconds(bad)  # type: ignore[arg-type]
    assert caught.value.message.startswith("keep_alive:")


@pytest.mark.parametrize(("name", "ours"), [
    ("gemma3-270m", ["gemma3-270m"]), ("gemma3-270m:latest", ["gemma3-270m"]),
    ("gemma3-270m:q4_k_m", ["gemma3-270m:q4_k_m", "gemma3-270m-q4_k_m"]),
    ("mymodel:v2", ["mymodel:v2", "mymodel-v2"]), (" smollm2:135m ", ["smollm2:135m", "smollm2-135m"])])
def test_ollama_names_map_onto_ids_variants_aliases_and_tagged_copies(name: str,
                                                                     ours: list[str]) -> None:
    assert spellings(name) == ours


def test_a_new_name_becomes_a_file_stem_and_a_quantization_tag_must_be_the_files() -> None:
    assert store_name("mine", "Q8_0") == ("mine", "mine")
    assert store_name("mine:latest", "Q8_0") == ("mine", "mine")
    assert store_name("mine:v2", "Q8_0") == ("mine-v2", "mine-v2")
    assert store_name("mine:q8_0", "Q8_0") == ("mine", "mine-Q8_0")
    with pytest.raises(InvalidRequest, match="names a quantization"):
        store_name("mine:q4_k_m", "Q8_0")
    for bad in ("../etc", "a/b", "Mine Space", "x:y:z"):
        with pytest.raises(InvalidRequest):
            store_name(bad, "F32")


def test_options_map_onto_the_shared_generation_options() -> None:
    body = GenerateRequest.model_validate({
        "model": "m", "prompt": "p", "format": "json", "options": {
            "num_predict": 7, "temperature": 0.2, "top_k": 3, "top_p": 0.5, "min_p": 0.1,
            "seed": 42, "stop": ["\n"], "repeat_penalty": 1.2, "presence_penalty": 0.3,
            "frequency_penalty": 0.4, "num_ctx": 512, "num_gpu": 0, "num_thread": 2,
            "mirostat": 1}})
    options = body.generation_options("ours")
    assert options.model == "ours" and options.max_tokens == 7 and options.format == "json"
    assert (options.temperature, options.top_k, options.top_p, options.min_p, options.seed) == (
        0.2, 3, 0.5, 0.1, 42)
    assert options.stop == ["\n"] and options.repeat_penalty == 1.2
    assert (options.presence_penalty, options.frequency_penalty) == (0.3, 0.4)
    assert body.n_ctx == 512
    unlimited = GenerateRequest.model_validate({"model": "m", "options": {"num_predict": -1,
                                                                          "seed": -1}})
    assert unlimited.generation_options("m").max_tokens is None
    assert unlimited.generation_options("m").seed is None
    assert GenerateRequest.model_validate({"model": "m", "format": ""}).format is None
