"""Constrained output, logit bias and penalties in the batched engine's sampler chains.

The tiny model's random weights are a good adversary for a grammar: left alone they produce
byte soup, so every JSON document that comes out is the grammar's doing. Schemas bound their
strings (``maxLength``, enums) so a random walk closes the document well inside max_tokens.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import jsonschema
import llama_cpp
import pytest

from llamahomed.engine.grammar import json_grammar, schema_grammar
from llamahomed.engine.protocol import SamplingParams
from llamahomed.engine.worker.sampling import SamplerChain
from llamahomed.engine.worker.sequential import SequentialEngine
from tests.engine.worker.test_batched import GREEDY, Collector, Start, start, tiny_512  # noqa: F401

SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                      "age": {"type": "integer"}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}},
     "required": ["color"]},
    {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4},
    {"type": "object", "properties": {
        "point": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                  "required": ["x", "y"], "additionalProperties": False},
        "ok": {"type": "boolean"}}, "required": ["point", "ok"], "additionalProperties": False},
    {"type": "object", "properties": {"kind": {"const": "cat"},
                                      "tags": {"type": "array", "maxItems": 3,
                                               "items": {"enum": ["a", "b", "c"]}}},
     "required": ["kind", "tags"], "additionalProperties": False},
    {"type": "integer"},
    {"type": "boolean"},
    {"enum": ["yes", "no", 3, None]},
    {"type": "string", "maxLength": 5},
    {"type": "object", "properties": {"id": {"type": "integer"},
                                      "scores": {"type": "array", "items": {"type": "number"},
                                                 "minItems": 1, "maxItems": 3},
                                      "owner": {"type": "object", "properties": {
                                          "nick": {"type": "string", "maxLength": 4},
                                          "admin": {"type": "boolean"}},
                                          "required": ["nick", "admin"],
                                          "additionalProperties": False}},
     "required": ["id", "scores", "owner"], "additionalProperties": False},
    {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer"}},
                                "required": ["n"], "additionalProperties": False},
     "minItems": 1, "maxItems": 2},
    {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 3}]},
]
SAMPLERS = [
    SamplingParams(max_tokens=300, temperature=0.0, repeat_penalty=1.0),
    SamplingParams(max_tokens=300, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
                   repeat_penalty=1.0, seed=1),
    SamplingParams(max_tokens=300, temperature=1.5, seed=2),  # top-k/top-p/min_p + penalty
]


def with_grammar(params: SamplingParams, grammar: str, **more: Any) -> SamplingParams:
    return SamplingParams(**{**params.to_wire(), "stop": params.stop, "logit_bias": (),
                             "grammar": grammar, **more})


def test_every_schema_output_validates(start: Start) -> None:
    """12 schemas x 3 sampler set-ups on random weights: every document parses and validates."""
    engine, collector = start()
    jobs = {}
    for i, schema in enumerate(SCHEMAS):
        for j, params in enumerate(SAMPLERS):
            seq = i * 10 + j
            jobs[seq] = schema
            engine.submit(seq, f"Answer in JSON #{seq}:", with_grammar(params, schema_grammar(schema)))
    collector.wait(list(jobs))
    for seq, schema in jobs.items():
        final = collector.final(seq)
        assert final["kind"] == "done" and final["finish_reason"] == "stop", (seq, final)
        jsonschema.validate(json.loads(collector.text(seq)), schema)


def test_plain_json_grammar(start: Start) -> None:
    """``"json"``: a JSON object (llama.cpp's json.gbnf); under max_tokens it may not close."""
    engine, collector = start()
    engine.submit(1, "JSON:", with_grammar(SAMPLERS[0], json_grammar(), max_tokens=3))
    collector.wait([1])
    assert collector.final(1)["finish_reason"] == "length"
    text = collector.text(1)
    assert text.startswith("{")
    with pytest.raises(json.JSONDecodeError):  # cut short: incomplete JSON, finish "length"
        json.loads(text)


def test_bad_grammar_is_an_error_event_not_a_crash(start: Start) -> None:
    engine, collector = start()
    engine.submit(1, "x", with_grammar(GREEDY, 'root ::= undefined-rule'))
    engine.submit(2, "x", with_grammar(GREEDY, 'root ::= <[999999]>'))  # a token the vocab lacks
    engine.submit(3, "x", GREEDY)
    collector.wait([1, 2, 3])
    for seq in (1, 2):
        events = collector.events(seq)
        assert [e["kind"] for e in events] == ["error"]  # before "accepted"
        assert events[0]["code"] == "invalid_request"
        assert events[0]["details"]["errors"][0]["field"] == "grammar"
    assert collector.final(3)["finish_reason"] == "length"


def test_logit_bias_forces_and_bans(start: Start) -> None:
    engine, collector = start()
    free = SamplingParams(max_tokens=8, temperature=0.0, repeat_penalty=1.0)
    engine.submit(1, "Hello", free)
    collector.wait([1])
    first = collector.text(1)
    token = engine.tokenize(" the")[-1]
    engine.submit(2, "Hello", with_grammar(free, "", logit_bias=((token, 100.0),)))
    engine.submit(3, "Hello", with_grammar(free, "", logit_bias=((token, -100.0),)))
    collector.wait([2, 3])
    assert collector.text(2) == " the" * 8
    assert " the" not in collector.text(3)
    assert first != collector.text(2)


def test_logit_bias_out_of_vocab_is_invalid_request(start: Start) -> None:
    engine, collector = start()
    engine.submit(1, "x", with_grammar(GREEDY, "", logit_bias=((engine.n_vocab, 1.0),)))
    collector.wait([1])
    (event,) = collector.events(1)
    assert event["code"] == "invalid_request" and "logit_bias" in event["message"]


def test_frequency_and_presence_penalties_change_greedy_text(start: Start) -> None:
    """Greedy on the tiny model repeats itself; a strong penalty breaks the loop."""
    engine, collector = start()
    base = SamplingParams(max_tokens=40, temperature=0.0, repeat_penalty=1.0)
    engine.submit(1, "Hello", base)
    engine.submit(2, "Hello", with_grammar(base, "", frequency_penalty=2.0))
    engine.submit(3, "Hello", with_grammar(base, "", presence_penalty=2.0))
    collector.wait([1, 2, 3])
    plain = collector.text(1)
    assert collector.text(2) != plain and collector.text(3) != plain


def test_defaults_keep_the_fast_path(start: Start) -> None:
    """No grammar, bias or penalty: greedy stays on numpy's argmax (no C sampler chain)."""
    engine, collector = start()
    engine.submit(1, "Hello", GREEDY)
    engine.submit(2, "Hello", with_grammar(GREEDY, 'root ::= "ab"'))
    collector.wait([1, 2])
    for params, greedy in ((GREEDY, True), (with_grammar(GREEDY, 'root ::= "ab"'), False),
                           (with_grammar(GREEDY, "", logit_bias=((5, 1.0),)), False),
                           (with_grammar(GREEDY, "", presence_penalty=0.5), False)):
        vocab = llama_cpp.llama_model_get_vocab(engine._model)  # noqa: SLF001
        chain = SamplerChain(llama_cpp, params, engine.n_vocab, 1, [], vocab)
        assert chain.greedy is greedy
        chain.close()
    assert collector.text(2) == "ab" and collector.final(2)["finish_reason"] == "stop"


def test_sequential_engine_honours_grammar_and_bias(tiny_512: Path) -> None:  # noqa: F811
    collector = Collector()
    engine = SequentialEngine.load({"model_path": str(tiny_512), "n_ctx": 512, "n_batch": 64,
                                    "n_threads": 2, "n_gpu_layers": 0, "engine": "sequential"},
                                   collector)
    thread = threading.Thread(target=engine.run, name="decode", daemon=True)
    thread.start()
    try:
        schema = SCHEMAS[0]
        engine.submit(1, "JSON:", with_grammar(SAMPLERS[1], schema_grammar(schema)))
        engine.submit(2, "x", with_grammar(GREEDY, "root ::= nope"))
        collector.wait([1, 2])
        jsonschema.validate(json.loads(collector.text(1)), schema)
        assert collector.final(2)["code"] == "invalid_request"
    finally:
        engine.stop()
        thread.join(timeout=30)


@pytest.mark.gemma
def test_gemma_schema_output_validates(start: Start, gemma_file: Path) -> None:
    """Real text: Gemma fills a schema with sensible values, and it validates."""
    engine, collector = start(model_path=str(gemma_file), n_ctx=2048)
    schema = {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 40}, "country": {"type": "string", "maxLength": 40},
        "population": {"type": "integer"}, "capital": {"type": "boolean"},
        "landmarks": {"type": "array", "items": {"type": "string", "maxLength": 40},
                      "minItems": 1, "maxItems": 3}},
        "required": ["city", "country", "population", "capital", "landmarks"],
        "additionalProperties": False}
    prompt = ("<start_of_turn>user\nDescribe Paris as JSON with city, country, population, "
              "capital and landmarks.<end_of_turn>\n<start_of_turn>model\n")
    engine.submit(1, prompt, with_grammar(SAMPLERS[0], schema_grammar(schema)), special=True)
    engine.submit(2, prompt, with_grammar(SAMPLERS[1], json_grammar()), special=True)
    collector.wait([1, 2])
    document = json.loads(collector.text(1))
    jsonschema.validate(document, schema)
    assert "paris" in document["city"].lower()
    if collector.final(2)["finish_reason"] == "stop":
        assert isinstance(json.loads(collector.text(2)), dict)


def test_a_grammar_no_token_can_follow_fails_that_sequence_only(start: Start) -> None:
    """A grammar no token can continue (llama.cpp never matches NUL): an error for that
    sequence, never llama.cpp's abort on accepting a refused token."""
    engine, collector = start()
    engine.submit(1, "x", with_grammar(GREEDY, r'root ::= "a" [\x00]'))
    engine.submit(2, "x", GREEDY)
    collector.wait([1, 2])
    final = collector.final(1)
    assert final["kind"] == "error" and final["code"] == "invalid_request", final
    assert collector.text(1) == "a"
    assert collector.final(2)["finish_reason"] == "length"
