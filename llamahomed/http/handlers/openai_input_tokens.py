"""``POST /v1/responses/input_tokens``: OpenAI's input-token count, on the model's own tokenizer.

The body is the Responses API's ``{model, input, instructions}``; the answer is
``{"object": "response.input_tokens", "input_tokens": N}``: the prompt tokens a generation with
that input would take here. ``input`` is a string (one user message) or a list of message items
(``{"role", "content"}``, ``content`` a string or ``input_text`` / ``output_text`` parts);
messages go through the model's chat template, ``instructions`` first as a system message. A
string on a model without a chat template is counted as the native API would prompt it. Other
item kinds (images, function calls) and ``tools`` are refused with a 400 naming the field, so a
count is never silently short.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from llamahomed.http.handlers.openai_embeddings import bad_field
from llamahomed.http.keys import INFERENCE
from llamahomed.http.schemas import parse_body

MAX_ITEMS = 10_000
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = ("input_text", "output_text", "text")


class InputTokensRequest(BaseModel):
    """OpenAI's ``responses.input_tokens.count`` body; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: str | None = Field(None, min_length=1, max_length=200)
    input: Any = Field(..., description="A string, or message items.", json_schema_extra={
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]})
    instructions: str | None = Field(None, description="A system message before the input.")
    tools: list[Any] | None = Field(None, description="Refused: tools are not counted.")

    def messages(self) -> list[dict[str, Any]]:
        """The input items as chat-template messages (a 400 naming ``input`` where not)."""
        if not isinstance(self.input, list) or not self.input or len(self.input) > MAX_ITEMS:
            raise bad_field("input", f"a string or a list of 1 to {MAX_ITEMS} message items")
        messages = [] if self.instructions is None else [{"role": "system",
                                                          "content": self.instructions}]
        for index, item in enumerate(self.input):
            role = ROLES.get(str(item.get("role"))) if isinstance(item, dict) else None
            if role is None or item.get("type", "message") != "message":
                raise bad_field("input", f"input[{index}]: only message items with role user, "
                                         "assistant, system or developer are counted")
            messages.append({"role": role, "content": _text(index, item.get("content"))})
        return messages


def _text(index: int, content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") in TEXT_PARTS
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(part["text"] for part in content)
    raise bad_field("input", f"input[{index}].content must be a string or a list of "
                             "input_text / output_text parts")


async def input_tokens(request: web.Request) -> web.Response:
    body = await parse_body(request, InputTokensRequest)
    if body.tools:
        raise bad_field("tools", "not supported here: tool definitions are not counted")
    service = request.app[INFERENCE]
    if isinstance(body.input, str):
        _, count = await service.count_tokens(body.model, prompt=body.input,
                                              system=body.instructions)
    else:
        _, count = await service.count_tokens(body.model, messages=body.messages())
    return web.json_response({"object": "response.input_tokens", "input_tokens": count})
