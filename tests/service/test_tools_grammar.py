"""Forcing grammars: one rule per callable tool, in each call syntax, and llama.cpp parses them."""

from __future__ import annotations

import pytest

from llamahomed.engine.grammar import GrammarError, grammar_problem
from llamahomed.service.tools import Tool, ToolChoice, ToolSet, call_grammar
from llamahomed.service.tools.grammar import body_grammar

WEATHER = Tool("get_weather", "the weather", {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                     "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"]})
ORDER = Tool("place_order", "", {
    "type": "object", "properties": {
        "item": {"type": "object", "properties": {"sku": {"type": "string"},
                                                  "count": {"type": "integer"}},
                 "required": ["sku", "count"]},
        "root": {"type": "boolean"}},   # a property called root must not clash with the rule
    "required": ["item"]})
BARE = Tool("ping")


@pytest.mark.parametrize("syntax", ["hermes", "mistral", "llama3"])
@pytest.mark.parametrize("parallel", [True, False])
def test_the_grammar_of_each_syntax_parses_in_llama_cpp(syntax: str, parallel: bool) -> None:
    tools = ToolSet((WEATHER, ORDER, BARE), ToolChoice("required"), parallel)
    grammar = call_grammar(tools, syntax)  # type: ignore[arg-type]
    assert grammar_problem(grammar) is None
    root = grammar.split("\n")[0]
    assert root.startswith("root ::= ") and "tc-body" in root
    assert ("{0,7}" in root) is parallel
    assert grammar.count("\nroot ::=") == 0 and "\ntc-body ::=" in grammar
    assert '"\\"get_weather\\""' in grammar and '"\\"place_order\\""' in grammar


def test_a_named_choice_allows_only_that_function() -> None:
    grammar = call_grammar(ToolSet((WEATHER, ORDER), ToolChoice("named", "place_order")))
    assert '"\\"place_order\\""' in grammar and "get_weather" not in grammar
    assert grammar_problem(grammar) is None


def test_llama3_calls_use_parameters_and_hermes_calls_arguments() -> None:
    tools = ToolSet((BARE,), ToolChoice("required"), False)
    assert '"\\"parameters\\""' in call_grammar(tools, "llama3")
    hermes = call_grammar(tools, "hermes")
    assert '"\\"arguments\\""' in hermes and hermes.startswith('root ::= "<tool_call>\\n" tc-body')


def test_a_schema_the_converter_refuses_is_a_grammar_error() -> None:
    with pytest.raises(GrammarError):
        body_grammar((Tool("bad", "", {"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}}),))
