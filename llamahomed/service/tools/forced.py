"""A forced tool choice (``required`` or a named function) as sampling parameters."""

from __future__ import annotations

import dataclasses

from llamahomed.core.errors import InvalidRequest
from llamahomed.engine.grammar import GrammarError, grammar_problem
from llamahomed.engine.protocol import SamplingParams
from llamahomed.service.tools.grammar import call_grammar
from llamahomed.service.tools.render import syntax_of
from llamahomed.service.tools.types import ToolSet


def forced_params(params: SamplingParams, tools: ToolSet, template_source: str) -> SamplingParams:
    """``params`` with the grammar that makes the answer calls, in the template's syntax."""
    if params.grammar:
        raise InvalidRequest(
            "tool_choice: a required or named tool choice constrains the answer with its own "
            "grammar; it cannot be combined with response_format, json_schema or grammar",
            details={"errors": [{"field": "tool_choice",
                                 "message": "not with response_format, json_schema or grammar"}]})
    try:
        grammar = call_grammar(tools, syntax_of(template_source))
    except GrammarError as exc:
        raise InvalidRequest(f"tools: {exc}", details={"errors": [
            {"field": "tools", "message": str(exc)}]}) from exc
    problem = grammar_problem(grammar)
    if problem:
        raise InvalidRequest(f"tools: {problem}", details={"errors": [
            {"field": "tools", "message": problem}]})
    return dataclasses.replace(params, grammar=grammar)
