"""Ollama's tool fields on ``/api/chat`` parsed into the service's neutral tool types.

``tools`` is OpenAI's function-tool list (``[{"type": "function", "function": {"name",
"description", "parameters"}}]``), parsed and refused exactly as the OpenAI route does
(``openai_tools.tool_set``). In the history an assistant message's ``tool_calls`` are
``[{"function": {"name", "arguments": {object}}}]`` (an ``id`` is kept when given; a JSON string
is taken for ``arguments`` too), and a ``tool`` message carries the result, with an optional
``tool_name`` (the function it answers).

Ollama has no ``tool_choice``: the model decides (``auto``). LlamaHome extension: a
``tool_choice`` (``"none"``, ``"auto"``, ``"required"``, or ``{"type": "function",
"function": {"name"}}``, or just a tool's name), top-level or in ``options`` (where the official
clients can send it), forces the answer to be calls through the grammar, as on the OpenAI route.
"""

from __future__ import annotations

import json
from typing import Any

from llamahomed.http.handlers.openai_tools import history_calls, refuse, tool_set
from llamahomed.service.tools import NAME, ToolCall, ToolSet


def ollama_tool_set(tools: list[Any] | None, choice: Any) -> ToolSet | None:
    """The request's tools and (extension) choice; None when it has no tools (an empty list
    is no tools: the official Python client sends ``tools: []`` on every chat)."""
    if isinstance(choice, str) and choice not in ("none", "auto", "required"):
        choice = {"type": "function", "function": {"name": choice}}
    return tool_set(tools or None, choice, None)


def with_tool_fields(i: int, message: dict[str, Any], calls: list[Any] | None) -> dict[str, Any]:
    """Message ``i`` (``Message.for_template``'s dict) with its calls in the neutral form."""
    if calls:
        if message["role"] != "assistant":
            raise refuse(f"messages[{i}].tool_calls", "only assistant messages carry tool calls")
        return {**message, "tool_calls": history_calls(i, calls, objects=True)}
    return message


def link_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each ``tool`` message tied to a call of the assistant turn before it (by ``name`` when it
    has one, else in order), so templates that pair results with call ids can show them."""
    out: list[dict[str, Any]] = []
    pending: list[ToolCall] = []
    for message in messages:
        if message.get("tool_calls"):
            pending = list(message["tool_calls"])
        elif message["role"] == "tool" and pending:
            named = [c for c in pending if c.name == message.get("name")]
            call = named[0] if named else pending[0]
            pending.remove(call)
            message = {**message, "tool_call_id": call.id, "name": call.name}
        elif message["role"] != "tool":
            pending = []
        out.append(message)
    return out
