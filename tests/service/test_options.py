"""GenerationOptions -> SamplingParams for the structured-output, penalty and bias fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llamahomed.core.settings import ModelSettings, SystemSettings
from llamahomed.engine.grammar import json_grammar, schema_grammar
from llamahomed.engine.protocol import SamplingParams
from llamahomed.service.options import GenerationOptions


def params(**fields: object) -> SamplingParams:
    return GenerationOptions.model_validate(fields).sampling(ModelSettings(), SystemSettings())


def test_defaults_add_nothing_to_the_sampler() -> None:
    plain = params()
    assert (plain.presence_penalty, plain.frequency_penalty) == (0.0, 0.0)
    assert plain.logit_bias == () and plain.grammar == ""
    assert SamplingParams.from_wire(plain.to_wire()) == plain


def test_format_and_grammar_become_gbnf() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert params(format="json").grammar == json_grammar()
    assert params(format=schema).grammar == schema_grammar(schema)
    assert params(grammar='root ::= "x"').grammar == 'root ::= "x"'


def test_bias_and_penalties_cross_the_wire() -> None:
    sampled = params(logit_bias={"7": -100, "12": 2.5}, presence_penalty=0.5,
                     frequency_penalty=-0.5)
    assert sampled.logit_bias == ((7, -100.0), (12, 2.5))
    assert SamplingParams.from_wire(sampled.to_wire()) == sampled


def test_json_strings_exclude_control_characters() -> None:
    """The converter's string rule is tightened: RFC 8259 wants control characters escaped."""
    for grammar in (json_grammar(), schema_grammar({"type": "string"})):
        assert r"\x20-\x21" in grammar and '[^"\\\\]' not in grammar


@pytest.mark.parametrize("body", [{"format": "xml"}, {"grammar": "root ::= ("},
                                  {"format": {"type": "no-such-type"}},
                                  {"logit_bias": {"-1": 1}}, {"frequency_penalty": -2.1}])
def test_bad_fields_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GenerationOptions.model_validate(body)
