"""Anthropic's Messages API request bodies, and what they mean to the daemon.

A request's ``system`` and ``messages`` (content blocks: ``text``, ``tool_use``,
``tool_result``; thinking blocks of earlier turns are dropped, as Anthropic drops them) become
the chat-template messages every dialect hands to the one generation pipeline, in the Hugging
Face convention GGUF chat templates read: an assistant turn's ``tool_use`` blocks are its
``tool_calls`` (``{"id", "type": "function", "function": {"name", "arguments": {...}}}``), each
``tool_result`` block a ``{"role": "tool", "tool_call_id", "name", "content"}`` message.

Tools: :func:`tool_request` turns ``tools`` and ``tool_choice`` into the dialect-neutral words
of ``llamahomed/service/tools/`` (``Tool(name, description, parameters)``, ``ToolChoice(mode,
name)``, ``parallel``), as plain dicts until that module is wired in; ``http/render/anthropic``
renders a call as a ``tool_use`` block (ids from :func:`tool_use_id`).

Fields this daemon does not know are ignored (newer SDKs send more); known ones it cannot
honour (images, documents, server tools, a final assistant message to continue) are refused
with a 400 that names them.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llamahomed.core.errors import InvalidRequest

TOOL_NAME = r"^[a-zA-Z0-9_-]{1,128}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class TextBlock(_Body):
    type: Literal["text"]
    text: str


class ToolUseBlock(_Body):
    type: Literal["tool_use"]
    id: str = Field(..., min_length=1, max_length=256)
    name: str = Field(..., min_length=1, max_length=128)
    input: dict[str, Any]


class _Unsupported(_Body):
    """A block the daemon cannot read (no vision model, no document pipeline)."""

    type: Literal["image", "document", "search_result", "server_tool_use",
                  "web_search_tool_result", "container_upload"]


class ToolResultBlock(_Body):
    type: Literal["tool_result"]
    tool_use_id: str = Field(..., min_length=1, max_length=256)
    content: str | list[Annotated[Union[TextBlock, _Unsupported],
                                  Field(discriminator="type")]] | None = None
    is_error: bool | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            for block in self.content:
                if isinstance(block, _Unsupported):
                    raise _unsupported(block.type, "tool_result content")
            text = "\n\n".join(b.text for b in self.content if isinstance(b, TextBlock))
        else:
            text = self.content or ""
        return f"Error: {text}" if self.is_error else text


class ThinkingBlock(_Body):
    type: Literal["thinking", "redacted_thinking"]


Block = Annotated[Union[TextBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock, _Unsupported],
                  Field(discriminator="type")]


class Message(_Body):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolDefinition(_Body):
    """A client tool: ``name``, ``description``, ``input_schema`` (server tools are refused)."""

    type: Literal["custom"] | None = None
    name: str = Field(..., pattern=TOOL_NAME)
    description: str | None = Field(None, max_length=100_000)
    input_schema: dict[str, Any]


class ToolChoice(_Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, pattern=TOOL_NAME)
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if (self.type == "tool") != (self.name is not None):
            raise ValueError("name is given exactly when type is 'tool'")
        return self


class Metadata(_Body):
    user_id: str | None = Field(None, max_length=256)


class OutputFormat(_Body):
    """Structured output: the answer is JSON valid against ``schema`` (a grammar enforces it)."""

    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(..., alias="schema")


class OutputConfig(_Body):
    effort: str | None = None
    """Accepted and ignored: how hard a Claude model thinks has no counterpart here."""
    format: OutputFormat | None = None


class CountTokensRequest(_Body):
    """``/v1/messages/count_tokens``: what a message's prompt is made of."""

    model: str = Field(..., min_length=1, max_length=200)
    messages: list[Message] = Field(..., min_length=1, max_length=10_000)
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    thinking: dict[str, Any] | None = None
    """Extended thinking: accepted and ignored (the models served here do not think aloud)."""

    @field_validator("tools", mode="before")
    @classmethod
    def _client_tools_only(cls, value: Any) -> Any:
        for tool in value if isinstance(value, list) else ():
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind not in (None, "custom"):
                raise ValueError(f"server tool {kind!r} is not supported: give client tools "
                                 "({name, description, input_schema})")
        return value

    def template_messages(self) -> list[dict[str, Any]]:
        """``system`` and ``messages`` (a final assistant turn left out: :meth:`prefill`) as
        the chat template's messages."""
        turns, _ = split_prefill(self.messages)
        return template_messages(self.system, turns)

    def prefill(self) -> str:
        """The final assistant turn's text, which the answer continues ("" for none)."""
        return split_prefill(self.messages)[1]


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages``."""

    max_tokens: int = Field(..., ge=1)
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    metadata: Metadata | None = None
    stream: bool = False
    output_config: OutputConfig | None = None
    output_format: OutputFormat | None = None
    """The structured-outputs beta's spelling of ``output_config.format``."""

    @model_validator(mode="after")
    def _one_format(self) -> MessagesRequest:
        if self.output_format is not None and self.output_config is not None \
                and self.output_config.format is not None:
            raise ValueError("give output_config.format or output_format, not both")
        return self

    def json_schema(self) -> dict[str, Any] | None:
        """The JSON Schema the answer must follow, if the request gives one."""
        given = self.output_format or (self.output_config.format if self.output_config else None)
        return given.json_schema if given is not None else None

    @field_validator("max_tokens", "temperature", "top_p", "top_k", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("a number, not a boolean")
        return value


# -- history ------------------------------------------------------------------------------------

def system_text(system: str | list[TextBlock] | None) -> str | None:
    if isinstance(system, list):
        return "\n\n".join(block.text for block in system) or None
    return system or None


def template_messages(system: str | list[TextBlock] | None,
                      messages: list[Message]) -> list[dict[str, Any]]:
    """Anthropic's conversation as chat-template messages (see the module's docstring).

    Consecutive turns of one role are joined into one, as Anthropic joins them (templates
    often insist that roles alternate).
    """
    names: dict[str, str] = {}  # tool_use id -> the tool's name, for the results that follow
    out: list[dict[str, Any]] = []
    text = system_text(system)
    if text is not None:
        out.append({"role": "system", "content": text})
    for index, turn in enumerate(messages):
        for message in _turn(turn, index, names):
            _append(out, message)
    return out


def split_prefill(messages: list[Message]) -> tuple[list[Message], str]:
    """The turns before a final assistant turn, and that turn's text: the prefill the answer
    continues (the prompt is the rendered turns with the generation prompt, then this text).
    As on Anthropic's API, a prefill holds text only and does not end in whitespace."""
    last = messages[-1]
    if last.role != "assistant":
        return messages, ""
    where = f"messages.{len(messages) - 1}"
    blocks = [TextBlock(type="text", text=last.content)] if isinstance(last.content, str) \
        else last.content
    texts: list[str] = []
    for position, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif not isinstance(block, ThinkingBlock):
            raise _misplaced(f"{where}.content.{position}",
                             "a final assistant message is a prefill: text blocks only")
    text = "".join(texts)
    if text != text.rstrip():
        raise _misplaced(where, "the final assistant content cannot end with whitespace")
    return messages[:-1], text


def _turn(turn: Message, index: int, names: dict[str, str]) -> list[dict[str, Any]]:
    if isinstance(turn.content, str):
        return [{"role": turn.role, "content": turn.content}]
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for position, block in enumerate(turn.content):
        where = f"messages.{index}.content.{position}"
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, _Unsupported):
            raise _unsupported(block.type, where)
        elif isinstance(block, ToolUseBlock):
            if turn.role != "assistant":
                raise _misplaced(where, "tool_use blocks come in assistant messages")
            names[block.id] = block.name
            calls.append({"id": block.id, "type": "function",
                          "function": {"name": block.name, "arguments": block.input}})
        elif isinstance(block, ToolResultBlock):
            if turn.role != "user":
                raise _misplaced(where, "tool_result blocks come in user messages")
            results.append({"role": "tool", "tool_call_id": block.tool_use_id,
                            "name": names.get(block.tool_use_id, ""), "content": block.text()})
    messages = results  # the results answer the previous turn's calls; the user's text follows
    if texts or calls or not results:
        message: dict[str, Any] = {"role": turn.role, "content": "\n\n".join(texts)}
        if calls:
            message["tool_calls"] = calls
        messages = [*results, message]
    return messages


def _append(out: list[dict[str, Any]], message: dict[str, Any]) -> None:
    last = out[-1] if out else None
    if last is None or last["role"] != message["role"] or message["role"] not in ("user",
                                                                                  "assistant"):
        out.append(message)
        return
    last["content"] = "\n\n".join(part for part in (last["content"], message["content"]) if part)
    if "tool_calls" in message:
        last["tool_calls"] = [*last.get("tool_calls", []), *message["tool_calls"]]


def _unsupported(kind: str, where: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: {kind} blocks are not supported by this server (text, "
                          "tool_use and tool_result are)",
                          details={"errors": [{"field": where, "message": f"{kind}: not supported"}]})


def _misplaced(where: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: {why}", details={"errors": [{"field": where, "message": why}]})


# -- tools ---------------------------------------------------------------------------------------

def tool_request(body: CountTokensRequest) -> dict[str, Any] | None:
    """``tools`` and ``tool_choice`` in the neutral words: ``{"tools": [{name, description,
    parameters}], "choice": {mode, name}, "parallel": bool}``; None when the request asks for
    no tools (none given, or ``tool_choice`` ``none``)."""
    choice = body.tool_choice
    if not body.tools:
        if choice is not None and choice.type in ("any", "tool"):
            raise InvalidRequest(f"tool_choice: {choice.type!r} needs tools",
                                 details={"errors": [{"field": "tool_choice",
                                                      "message": "no tools were given"}]})
        return None
    if choice is not None and choice.type == "none":
        return None
    names = [tool.name for tool in body.tools]
    if choice is not None and choice.name is not None and choice.name not in names:
        raise InvalidRequest(f"tool_choice: no tool is named {choice.name!r}",
                             details={"errors": [{"field": "tool_choice.name",
                                                  "message": "not among tools"}]})
    mode = {"auto": "auto", "any": "required", "tool": "named"}[choice.type if choice else "auto"]
    return {"tools": [{"name": t.name, "description": t.description or "",
                       "parameters": t.input_schema} for t in body.tools],
            "choice": {"mode": mode, "name": choice.name if choice else None},
            "parallel": not (choice is not None and choice.disable_parallel_tool_use)}


def tool_use_id() -> str:
    return f"toolu_{uuid.uuid4().hex[:24]}"

