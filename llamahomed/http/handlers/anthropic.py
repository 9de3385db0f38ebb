"""Anthropic's Messages API, so Claude-style clients and Anthropic's SDKs talk to the daemon.

``POST /v1/messages`` (streamed as Anthropic's SSE events with ``stream: true``) and ``POST
/v1/messages/count_tokens``. The api key is a LlamaHome token (``x-api-key``, or ``Authorization:
Bearer``), ``model`` a model id of this daemon; errors on these routes have Anthropic's shape
(``http/render/anthropic.py``, named by the routes' ``errors="anthropic"``). The request
bodies and their meaning are in ``anthropic_schema.py``; docs/Anthropic.md says what is
supported, ignored and refused.
"""

from __future__ import annotations

import uuid
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from llamahomed.core.errors import ValidationFailed
from llamahomed.http.access import is_admin, owner
from llamahomed.http.guard import stream_slot
from llamahomed.http.handlers.anthropic_schema import CountTokensRequest, MessagesRequest
from llamahomed.http.handlers.anthropic_tools import neutral_calls, tool_set
from llamahomed.http.keys import CLAIMS, INFERENCE, REQUEST_ID
from llamahomed.http.ratelimit import request_meter
from llamahomed.http.render import anthropic_tools as render_tools
from llamahomed.http.render.anthropic import message, stop_reason, stream_message, text_block, usage
from llamahomed.http.schemas import parse_body
from llamahomed.service.generation import Generation
from llamahomed.service.options import GenerationOptions, validation_details

Body = TypeVar("Body", bound=BaseModel)


def _readable(errors: list[dict[str, str]]) -> list[dict[str, str]]:
    """Pydantic's field paths without its union-branch labels (``content.list[tagged-union[
    ...]].0.text.text`` -> ``content.0.text``); a string branch's failure is left out when the
    other branch says more."""
    read: list[tuple[dict[str, str], bool]] = []
    for error in errors:
        parts = error["field"].split(".")
        tags = {i + 2 for i, part in enumerate(parts) if "tagged-union" in part}  # index, tag
        field = ".".join(p for i, p in enumerate(parts) if "[" not in p and i not in tags)
        read.append(({"field": field or "body", "message": error["message"]}, parts[-1] == "str"))
    return [e for e, string_branch in read if not string_branch] or [e for e, _ in read]


async def _parse(request: web.Request, model: type[Body]) -> Body:
    """The body as ``model``; a validation error's message names each field and its problem
    (Anthropic's error shape carries only the message)."""
    try:
        body = await parse_body(request, model)
    except ValidationFailed as exc:
        errors = _readable(exc.details.get("errors", []))
        said = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise ValidationFailed(said or exc.message, details={"errors": errors}) from exc
    return body


_FIELDS = {"stop": "stop_sequences", "format": "output_config.format.schema"}


def _options(body: MessagesRequest) -> GenerationOptions:
    """The sampling fields, checked by the rules every route shares (stop strings, limits)."""
    try:
        return GenerationOptions(model=body.model, max_tokens=body.max_tokens,
                                 temperature=body.temperature, top_p=body.top_p,
                                 top_k=body.top_k, stop=body.stop_sequences,
                                 format=body.json_schema())
    except ValidationError as exc:
        errors = validation_details(exc)["errors"]
        for error in errors:
            error["field"] = _FIELDS.get(error["field"].split(".")[0], error["field"])
        raise ValidationFailed("; ".join(f"{e['field']}: {e['message']}" for e in errors),
                               details={"errors": errors}) from exc


def _headers(request: web.Request) -> dict[str, str]:
    """Anthropic's ``request-id`` header (the SDKs show it as ``_request_id``)."""
    request_id = request.get(REQUEST_ID)
    return {"request-id": request_id} if request_id else {}


async def messages(request: web.Request) -> web.StreamResponse:
    body = await _parse(request, MessagesRequest)
    options = _options(body)
    tools = tool_set(body)
    chat = neutral_calls(body.template_messages())
    reply_id = f"msg_{uuid.uuid4().hex[:24]}"

    async def start() -> Generation:
        return await request.app[INFERENCE].generate(
            options, messages=chat, meter=request_meter(request), may_reload=is_admin(request),
            owner=owner(request), prefill=body.prefill(), tools=tools)

    if tools is not None and tools.active:
        if body.stream:
            with stream_slot(request.app, request.get(CLAIMS)):
                return await render_tools.stream(request, await start(), reply_id, tools,
                                                 _headers(request))
        return web.json_response(await render_tools.whole(await start(), reply_id, tools),
                                 headers=_headers(request))

    if body.stream:
        with stream_slot(request.app, request.get(CLAIMS)):
            return await stream_message(request, await start(), reply_id, _headers(request))
    generation = await start()
    result = await generation.result()
    reason, sequence = stop_reason(result.finished)
    content = [text_block(result.text)] if result.text else []
    return web.json_response(message(reply_id, generation.entry.id, content, reason, sequence,
                                     usage(result.finished.usage)), headers=_headers(request))


async def count_tokens(request: web.Request) -> web.Response:
    body = await _parse(request, CountTokensRequest)
    _, count = await request.app[INFERENCE].count_tokens(
        body.model, neutral_calls(body.template_messages()), body.prefill(), tools=tool_set(body))
    return web.json_response({"input_tokens": count}, headers=_headers(request))
