"""The dialect-neutral words of tool calling: a tool, a call, and the caller's choice.

Every dialect (OpenAI ``tools``/``tool_calls``, Ollama's ``/api/chat`` tools, Anthropic's
``tool_use`` blocks) parses its own fields into these, and renders its own shapes from them.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
MAX_PARALLEL_CALLS = 8
"""The most calls one forced answer may hold (a grammar bound: a tiny model would loop)."""

Mode = Literal["none", "auto", "required", "named"]


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, what it does, its arguments' JSON Schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: dict(EMPTY_PARAMETERS))

    def schema_for_prompt(self) -> dict[str, Any]:
        """The function as templates and prompts show it (OpenAI's ``tools[]`` entry shape,
        which Hugging Face chat templates expect)."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolCall:
    """One call the model made (or made earlier, in the history): ``arguments`` is a JSON object."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: new_call_id())

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ToolChoice:
    """``none``: never call; ``auto``: the model decides; ``required``: at least one call;
    ``named``: exactly the function ``name``. ``required`` and ``named`` are enforced by a
    grammar, so the answer is a call whatever the model."""

    mode: Mode = "auto"
    name: str | None = None

    @property
    def forced(self) -> bool:
        return self.mode in ("required", "named")


@dataclass(frozen=True)
class ToolSet:
    """What a request says about tools: the tools, the choice, and whether several calls may
    come in one answer (``parallel``)."""

    tools: tuple[Tool, ...]
    choice: ToolChoice = ToolChoice()
    parallel: bool = True

    @property
    def active(self) -> bool:
        """Whether the answer may hold calls (and so is parsed for them)."""
        return bool(self.tools) and self.choice.mode != "none"

    def names(self) -> list[str]:
        return [tool.name for tool in self.tools]

    def callable_tools(self) -> tuple[Tool, ...]:
        """The tools the answer may call: all, or the one the choice names."""
        if self.choice.mode == "named":
            return tuple(t for t in self.tools if t.name == self.choice.name)
        return self.tools

    @property
    def max_calls(self) -> int:
        """One call for a named choice (OpenAI forces that function's call, once); up to
        ``MAX_PARALLEL_CALLS`` otherwise when parallel calls are allowed."""
        return MAX_PARALLEL_CALLS if self.parallel and self.choice.mode != "named" else 1


@dataclass(frozen=True)
class Parsed:
    """A model's answer split into its text and its calls."""

    content: str
    calls: tuple[ToolCall, ...] = ()
