"""Tools and tool-call history into a chat template's messages.

Messages come in the neutral form every dialect builds: ``{"role", "content"}``, an assistant
message may carry ``"tool_calls": [ToolCall, ...]``, a ``tool`` message ``"tool_call_id"`` and
``"name"``. Two ways to show them:

* The template has tool support of its own (its source uses ``tools``, as Hugging Face
  templates for Qwen, Hermes, Llama 3.x, Mistral do): the tools go in as ``tools=`` (OpenAI's
  ``[{"type": "function", "function": {...}}]`` shape) and calls as
  ``{"id", "type": "function", "function": {"name", "arguments": {dict}}}``, the shape those
  templates read.
* Otherwise a system prompt describes the tools and the exact output (Hermes ``<tool_call>``
  JSON); earlier calls become that text in the assistant's turn and tool results become user
  turns in ``<tool_response>`` tags, which every template can show.

With ``tool_choice`` ``none`` the tools are not shown at all (the history still is).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from llamahomed.service.chat_template import ChatTemplate
from llamahomed.service.tools.grammar import Syntax
from llamahomed.service.tools.types import ToolCall, ToolSet

_USES_TOOLS = re.compile(r"\btools\b")


def template_uses_tools(source: str) -> bool:
    return bool(_USES_TOOLS.search(source))


def syntax_of(source: str) -> Syntax:
    """The call syntax the template's model writes (Hermes ``<tool_call>`` unless the template
    shows another)."""
    if "[TOOL_CALLS]" in source:
        return "mistral"
    if "<tool_call>" in source or not template_uses_tools(source):
        return "hermes"
    if "<|python_tag|>" in source or "ipython" in source:
        return "llama3"
    return "hermes"


def render_prompt(template: ChatTemplate, messages: list[dict[str, Any]],
                  tools: ToolSet | None) -> str:
    """The prompt for ``messages`` with ``tools`` (None: no tools in this request)."""
    shown = tools is not None and tools.active
    messages = _named_results(messages)
    if template_uses_tools(template.source):
        extra: dict[str, Any] = {}
        if shown and tools is not None:
            extra["tools"] = [tool.schema_for_prompt() for tool in tools.tools]
        mistral = syntax_of(template.source) == "mistral"
        return template.render([_native(m, mistral) for m in messages], **extra)
    plain = _as_text(messages)
    if shown and tools is not None:
        plain = _with_system(plain, tools_prompt(tools))
    return template.render(plain)


def tools_prompt(tools: ToolSet) -> str:
    """The generic system prompt: the tools, and how to call them."""
    listed = "\n".join(json.dumps(t.schema_for_prompt(), ensure_ascii=False) for t in tools.tools)
    text = ("You can call functions (tools). Their signatures, as JSON Schema, are within "
            f"<tools></tools>:\n<tools>\n{listed}\n</tools>\n"
            "To call a function, answer with a JSON object with its name and arguments within "
            "<tool_call></tool_call> tags, exactly like this:\n"
            '<tool_call>\n{"name": "<function-name>", "arguments": {<arguments>}}\n</tool_call>\n')
    if tools.choice.mode == "named":
        text += f"Call the function {tools.choice.name} now."
    elif tools.choice.mode == "required":
        text += "Call one of the functions now."
    else:
        text += "Call a function only when it helps; otherwise answer normally."
    if tools.parallel and tools.choice.mode != "named":
        text += " You may make several calls, one tag each."
    return text


def calls_as_text(calls: list[ToolCall]) -> str:
    return "\n".join(f'<tool_call>\n{json.dumps({"name": c.name, "arguments": c.arguments}, ensure_ascii=False)}\n</tool_call>'
                     for c in calls)


def _named_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool results with the name of the function they answer (templates may show it)."""
    names = {c.id: c.name for m in messages for c in m.get("tool_calls") or ()}
    return [{**m, "name": names[m["tool_call_id"]]}
            if m.get("role") == "tool" and not m.get("name") and m.get("tool_call_id") in names
            else m for m in messages]


def _native(message: dict[str, Any], mistral: bool) -> dict[str, Any]:
    """``message`` as templates with tool support read it. Mistral's templates refuse call ids
    that are not 9 letters or digits: there each id is shown as a digest of itself."""
    def shown(call_id: str) -> str:
        return hashlib.sha256(call_id.encode()).hexdigest()[:9] if mistral else call_id

    if message.get("role") == "tool" and message.get("tool_call_id"):
        return {**message, "tool_call_id": shown(message["tool_call_id"])}
    calls = message.get("tool_calls")
    if not calls:
        return message
    return {**message, "tool_calls": [
        {"id": shown(c.id), "type": "function",
         "function": {"name": c.name, "arguments": c.arguments}} for c in calls]}


def _as_text(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history with calls as Hermes text and tool results as user turns."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.get("tool_calls"):
            text = message.get("content") or ""
            calls = calls_as_text(list(message["tool_calls"]))
            out.append({"role": "assistant", "content": f"{text}\n{calls}" if text else calls})
        elif message.get("role") == "tool":
            result = f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"
            if out and out[-1].get("role") == "user" and out[-1].get("tool_results"):
                out[-1] = {**out[-1], "content": out[-1]["content"] + "\n" + result}
            else:
                out.append({"role": "user", "content": result, "tool_results": True})
        else:
            out.append(message)
    return [{k: v for k, v in m.items() if k != "tool_results"} for m in out]


def _with_system(messages: list[dict[str, Any]], prompt: str) -> list[dict[str, Any]]:
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        return [{**first, "content": f"{first.get('content') or ''}\n\n{prompt}".lstrip()},
                *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]
