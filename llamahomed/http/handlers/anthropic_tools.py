"""Anthropic's ``tools`` / ``tool_choice`` and history calls as the service's neutral tool types.

``tool_choice`` ``auto`` lets the model decide, ``any`` forces one call or more and ``tool``
(with ``name``) that tool's call, both through the grammar (``service/tools/forced.py``);
``none`` hides the tools; ``disable_parallel_tool_use`` allows one call only. An
``input_schema`` the grammar cannot enforce, or one that is not an object schema, is a 400.
"""

from __future__ import annotations

from typing import Any

from llamahomed.core.errors import InvalidRequest
from llamahomed.engine.grammar import GrammarError
from llamahomed.http.handlers.anthropic_schema import CountTokensRequest, tool_request
from llamahomed.service.tools import Tool, ToolCall, ToolChoice, ToolSet, body_grammar


def _refuse(field: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {why}", details={"errors": [{"field": field, "message": why}]})


def tool_set(body: CountTokensRequest) -> ToolSet | None:
    """The request's tools; None when it asks for none."""
    asked = tool_request(body)
    if asked is None:
        return None
    tools = []
    for i, spec in enumerate(asked["tools"]):
        field = f"tools.{i}.input_schema"
        schema = spec["parameters"]
        if schema.get("type", "object") != "object":
            raise _refuse(field, "a JSON Schema whose type is 'object'")
        tool = Tool(spec["name"], spec["description"], schema)
        try:
            body_grammar((tool,))
        except GrammarError as exc:
            raise _refuse(field, str(exc)) from exc
        tools.append(tool)
    names = [t.name for t in tools]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise _refuse(f"tools.{i}.name", f"the name {name!r} is used twice")
    choice = asked["choice"]
    return ToolSet(tuple(tools), ToolChoice(choice["mode"], choice["name"]), asked["parallel"])


def neutral_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``template_messages`` with each assistant turn's calls as :class:`ToolCall` s (what
    ``render_prompt`` reads)."""
    return [{**m, "tool_calls": [ToolCall(c["function"]["name"], c["function"]["arguments"],
                                          c["id"]) for c in m["tool_calls"]]}
            if m.get("tool_calls") else m for m in messages]
