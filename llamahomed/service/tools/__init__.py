"""Tool calling for every dialect: types, prompt rendering, output parsing, forcing grammars.

A dialect parses its fields into :class:`ToolSet` and history :class:`ToolCall` s, the
service renders them into the prompt (:func:`render_prompt`) and, for a forced choice, adds a
grammar (:func:`call_grammar`); the answer's text is split into content and calls by
:class:`ToolStream` (streaming) or :func:`parse_text` (whole answers).
"""

from llamahomed.service.tools.grammar import Syntax, body_grammar, call_grammar
from llamahomed.service.tools.render import render_prompt, syntax_of, template_uses_tools
from llamahomed.service.tools.stream import Call, Content, Piece, ToolStream, parse_text
from llamahomed.service.tools.types import (
    EMPTY_PARAMETERS,
    MAX_PARALLEL_CALLS,
    NAME,
    Parsed,
    Tool,
    ToolCall,
    ToolChoice,
    ToolSet,
    new_call_id,
)

__all__ = ["EMPTY_PARAMETERS", "MAX_PARALLEL_CALLS", "NAME", "Call", "Content", "Parsed", "Piece",
           "Syntax", "Tool", "ToolCall", "ToolChoice", "ToolSet", "ToolStream", "body_grammar",
           "call_grammar", "new_call_id", "parse_text", "render_prompt", "syntax_of",
           "template_uses_tools"]
