"""OpenAI's tool fields parsed into the service's neutral tool types, with OpenAI's 400s.

``tools: [{"type": "function", "function": {"name", "description", "parameters", "strict"}}]``,
``tool_choice`` (``"none"``, ``"auto"``, ``"required"`` or ``{"type": "function", "function":
{"name"}}``), ``parallel_tool_calls``; in the history an assistant message's ``tool_calls:
[{"id", "type": "function", "function": {"name", "arguments": "<JSON object string>"}}]`` and a
``tool`` message's ``tool_call_id``. Each refusal names its field in OpenAI's spelling
(``tools[0].function.parameters``), which the error middleware puts in ``param``.
"""

from __future__ import annotations

import json
from typing import Any

from llamahomed.core.errors import InvalidRequest
from llamahomed.engine.grammar import GrammarError
from llamahomed.service.tools import (
    EMPTY_PARAMETERS,
    NAME,
    Tool,
    ToolCall,
    ToolChoice,
    ToolSet,
    body_grammar,
)

MAX_TOOLS = 128


def refuse(field: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {why}", details={"errors": [{"field": field, "message": why}]})


def tool_set(tools: list[Any] | None, choice: Any, parallel: bool | None) -> ToolSet | None:
    """The request's tools, or None when it has none (and asks for none)."""
    if not tools:
        if tools is not None and len(tools) == 0:
            raise refuse("tools", "give at least one tool, or leave tools out")
        if choice not in (None, "none", "auto"):  # vLLM and OpenAI: auto without tools is a chat
            raise refuse("tool_choice", "needs tools: there is no tool to call")
        return None
    if len(tools) > MAX_TOOLS:
        raise refuse("tools", f"at most {MAX_TOOLS} tools")
    parsed = tuple(_tool(i, spec) for i, spec in enumerate(tools))
    names = [t.name for t in parsed]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise refuse(f"tools[{i}].function.name", f"the name {name!r} is used twice")
    tool_choice = _choice(choice, names)
    result = ToolSet(parsed, tool_choice, True if parallel is None else bool(parallel))
    return result


def _tool(i: int, spec: Any) -> Tool:
    where = f"tools[{i}]"
    if not isinstance(spec, dict) or spec.get("type", "function") != "function":
        raise refuse(f"{where}.type", "only function tools ({'type': 'function', ...}) are supported")
    function = spec.get("function")
    if not isinstance(function, dict):
        raise refuse(f"{where}.function", "an object with name, description, parameters")
    name = function.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise refuse(f"{where}.function.name", "1 to 64 letters, digits, underscores or dashes")
    description = function.get("description") or ""
    if not isinstance(description, str):
        raise refuse(f"{where}.function.description", "a string")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = dict(EMPTY_PARAMETERS)
    field = f"{where}.function.parameters"
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise refuse(field, "a JSON Schema object whose type is 'object'")
    tool = Tool(name, description, parameters)
    try:  # the schema must be one a grammar can enforce (required / named choice)
        body_grammar((tool,))
    except GrammarError as exc:
        raise refuse(field, str(exc)) from exc
    return tool


def _choice(choice: Any, names: list[str]) -> ToolChoice:
    if choice is None or choice == "auto":
        return ToolChoice("auto")
    if choice in ("none", "required"):
        return ToolChoice(choice)
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise refuse("tool_choice", "{'type': 'function', 'function': {'name': ...}}")
        if name not in names:
            raise refuse("tool_choice", f"names {name!r}, which is not one of the tools")
        return ToolChoice("named", name)
    raise refuse("tool_choice", "'none', 'auto', 'required' or "
                                "{'type': 'function', 'function': {'name': ...}}")


def history_calls(i: int, calls: list[Any], *, objects: bool = False) -> list[ToolCall]:
    """An assistant message's ``tool_calls`` (message ``i``) as calls. OpenAI's arguments are
    a string holding a JSON object; with ``objects`` (Ollama's shape) they may be the object
    itself, and missing or blank ones are ``{}``."""
    out = []
    for j, call in enumerate(calls):
        where = f"messages[{i}].tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise refuse(f"{where}.function", "an object with name and arguments")
        name = function.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise refuse(f"{where}.function.name", "1 to 64 letters, digits, underscores or dashes")
        value = _arguments(function.get("arguments", {} if objects else None), objects)
        if not isinstance(value, dict):
            raise refuse(f"{where}.function.arguments",
                         "a JSON object" if objects else "a string holding a JSON object")
        call_id = call.get("id")
        out.append(ToolCall(name, value, call_id) if isinstance(call_id, str) and call_id
                   else ToolCall(name, value))
    return out


def _arguments(arguments: Any, objects: bool) -> Any:
    """The arguments' object, or something that is not a dict when they hold none."""
    if isinstance(arguments, str):
        if objects and not arguments.strip():
            return {}
        try:
            return json.loads(arguments)
        except ValueError:
            return None
    return arguments if objects else None


def with_tool_fields(i: int, message: dict[str, Any], calls: list[Any] | None,
                     call_id: str | None) -> dict[str, Any]:
    """Message ``i`` (``for_template``'s dict) with its tool fields in the neutral form."""
    if calls:
        if message["role"] != "assistant":
            raise refuse(f"messages[{i}].tool_calls", "only assistant messages carry tool calls")
        message = {**message, "tool_calls": history_calls(i, calls)}
    if message["role"] == "tool":
        if not call_id:
            raise refuse(f"messages[{i}].tool_call_id",
                         "a tool message needs the tool_call_id of the call it answers")
        message = {**message, "tool_call_id": call_id}
    return message
