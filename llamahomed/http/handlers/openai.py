"""OpenAI-compatible routes, so tools built for OpenAI's API talk to the daemon unchanged.

``POST /v1/chat/completions`` (the model's own chat template from its GGUF), ``POST
/v1/completions``, ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/embeddings``. The same
bearer tokens as the rest of the API (a LlamaHome token is the OpenAI ``api_key``); errors on
these routes have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` (rendered
by the error middleware). Streaming is SSE: ``data: {chunk}`` events, then ``data: [DONE]``.

LlamaHome's own options ride in the body next to OpenAI's fields (the SDKs' ``extra_body``):
``top_k``, ``min_p``, ``repeat_penalty`` and ``n_ctx`` (the context to load the model with),
and llama-server's ``json_schema`` and ``grammar`` (GBNF). Structured output:
``response_format`` ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema":
{"name", "schema", "strict"}}`` on both completion routes (a grammar constrains sampling, so
the output follows the schema whatever ``strict`` says). ``n`` (1 to ``MAX_CHOICES``) choices
are sibling sequences that share the prompt's KV in the worker (the prompt is decoded once;
with a ``seed``, choice i samples with seed + i); usage counts each prompt once. Tools:
``tools``, ``tool_choice`` (``required`` and a named function are enforced by a grammar),
``parallel_tool_calls``, and calls and results in the history (``openai_tools``; the machinery
is the service's, shared by every dialect). OpenAI features the daemon cannot honour
(``best_of``, logprobs) are refused with a 400 that names the field, never silently ignored.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llamahomed.core.errors import InvalidRequest, ValidationFailed
from llamahomed.engine.protocol import Prompt
from llamahomed.http.access import is_admin, owner
from llamahomed.http.guard import stream_slot
from llamahomed.http.handlers.openai_tools import tool_set, with_tool_fields
from llamahomed.http.keys import CLAIMS, INFERENCE
from llamahomed.http.ratelimit import request_meter
from llamahomed.http.render.openai_tools import message as tool_message
from llamahomed.http.render.openai_tools import reason as tool_reason
from llamahomed.http.render.openai_tools import stream_tool_sse
from llamahomed.http.render.sse import finish_reason, stream_sse, usage
from llamahomed.http.schemas import parse_body
from llamahomed.registry.store import ModelEntry
from llamahomed.service.generation import Generation, request_usage, results
from llamahomed.service.inference import InferenceService
from llamahomed.service.options import GenerationOptions, validation_details
from llamahomed.service.tools import ToolSet, parse_text

MAX_CHOICES = 16
"""The most ``n`` choices a request may ask (OpenAI allows 128): each choice is a sequence
holding a slot and its own KV as it generates, so 16 (four times the default slots) keeps one
request from filling a worker's queue while still covering what n is used for."""
OWNER = "llamahome"


# -- request bodies -----------------------------------------------------------------------------

class _Strict(BaseModel):
    """OpenAI's request objects: fields this daemon does not know are ignored (as OpenAI's
    newer fields are by vLLM and llama-server); known ones it cannot honour are refused."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class StreamOptions(_Strict):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class _Common(_Strict):
    """Fields both completion routes share, plus LlamaHome's own (``extra_body``)."""

    model: str | None = Field(None, min_length=1, max_length=200)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(None, max_length=256)
    # LlamaHome options
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    n_ctx: int | None = Field(None, ge=64, le=1_048_576)
    response_format: dict[str, Any] | None = None
    json_schema: dict[str, Any] | None = None  # llama-server's extra field
    grammar: str | None = None                 # llama-server's extra field (GBNF)

    def _unsupported(self) -> list[tuple[str, str]]:
        problems = []
        if self.stream_options is not None and not self.stream:
            problems.append(("stream_options", "only allowed when stream is true (as OpenAI)"))
        kind = (self.response_format or {}).get("type", "text")
        if kind not in ("text", "json_object", "json_schema"):
            problems.append(("response_format",
                             "type must be 'text', 'json_object' or 'json_schema'"))
        elif kind == "json_schema" and not isinstance(self._response_schema(), dict):
            problems.append(("response_format",
                             "json_schema needs {'name': ..., 'schema': {a JSON Schema object}}"))
        asked = [name for name, given in (("response_format", kind != "text"),
                                          ("json_schema", self.json_schema is not None),
                                          ("grammar", self.grammar is not None)) if given]
        if len(asked) > 1:
            problems.append((asked[1], f"give one of response_format, json_schema, grammar "
                                       f"(got {', '.join(asked)})"))
        return problems

    def _response_schema(self) -> Any:
        spec = (self.response_format or {}).get("json_schema")
        return spec.get("schema") if isinstance(spec, dict) else None

    def _format(self) -> str | dict[str, Any] | None:
        """The native ``format``: "json", a JSON Schema, or None."""
        kind = (self.response_format or {}).get("type", "text")
        if kind == "json_object":
            return "json"
        if kind == "json_schema":
            schema: dict[str, Any] = self._response_schema()
            return schema
        return self.json_schema

    def check_supported(self) -> None:
        problems = self._unsupported()
        if problems:
            field, why = problems[0]
            raise InvalidRequest(f"{field}: {why}", details={"errors": [
                {"field": f, "message": m} for f, m in problems]})

    def options(self, max_tokens: int | None) -> GenerationOptions:
        """The LlamaHome sampling fields, validated by the same rules as /api/v1/process."""
        try:
            return GenerationOptions.model_validate({
                "model": self.model, "max_tokens": max_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "top_k": self.top_k, "min_p": self.min_p,
                "repeat_penalty": self.repeat_penalty, "seed": self.seed, "stop": self.stop,
                "presence_penalty": self.presence_penalty,
                "frequency_penalty": self.frequency_penalty, "logit_bias": self.logit_bias,
                "format": self._format(), "grammar": self.grammar, **self._logprob_fields()})
        except ValidationError as exc:
            details = validation_details(exc)
            for error in details["errors"]:  # OpenAI's names for the native fields
                if error["field"] == "top_logprobs" and isinstance(self, CompletionRequest):
                    error["field"] = "logprobs"
                if error["field"].startswith("format"):
                    error["field"] = ("json_schema" if self.json_schema is not None
                                      else "response_format")
            raise ValidationFailed(f"invalid field(s): {', '.join(e['field'] for e in details['errors'])}",
                                   details=details) from exc

    def _logprob_fields(self) -> dict[str, Any]:
        return {}

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def continuous_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.continuous_usage_stats)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=256)
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = Field(None, max_length=256)

    def for_template(self) -> dict[str, Any]:
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role,
                                   "content": content or ""}
        if self.name:
            message["name"] = self.name
        return message


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=10_000)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None

    def _unsupported(self) -> list[tuple[str, str]]:
        problems = super()._unsupported()
        if self.top_logprobs is not None and not self.logprobs:
            problems.append(("top_logprobs", "needs logprobs: true (as OpenAI)"))
        if self.logprobs and self.tools:
            problems.append(("logprobs", "not available with tools yet"))
        return problems

    def _logprob_fields(self) -> dict[str, Any]:
        return {"logprobs": bool(self.logprobs), "top_logprobs": self.top_logprobs}


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(..., min_length=1)
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None

    def _unsupported(self) -> list[tuple[str, str]]:
        problems = super()._unsupported()
        if self.logprobs is not None and self.echo:
            problems.append(("logprobs", "not with echo: prompt logprobs are not computed"))
        if self.suffix:
            problems.append(("suffix", "not supported"))
        if self.best_of not in (None, 1):
            problems.append(("best_of", "only best_of=1 is supported"))
        if self.stream and len(self.prompts) != 1:
            problems.append(("prompt", "streaming takes one prompt"))
        if not all(self.prompts):
            problems.append(("prompt", "prompts must not be empty"))
        if len(self.prompts) > 64:
            problems.append(("prompt", "at most 64 prompts per request"))
        return problems

    def _logprob_fields(self) -> dict[str, Any]:
        return ({} if self.logprobs is None
                else {"logprobs": True, "top_logprobs": self.logprobs})

    @property
    def prompts(self) -> list[Prompt]:
        """The prompts: texts or token-id lists (OpenAI's four forms of ``prompt``)."""
        if isinstance(self.prompt, str) or isinstance(self.prompt[0], int):
            return [self.prompt]
        return list(self.prompt)


# -- handlers -----------------------------------------------------------------------------------

async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, ChatRequest)
    body.check_supported()
    options = body.options(body.max_completion_tokens or body.max_tokens)
    tools = tool_set(body.tools, body.tool_choice, body.parallel_tool_calls)
    messages = [with_tool_fields(i, m.for_template(), m.tool_calls, m.tool_call_id)
                for i, m in enumerate(body.messages)]
    reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    async def start() -> list[Generation]:
        return await request.app[INFERENCE].generate_many(
            options, body.n, messages=messages, n_ctx=body.n_ctx, meter=request_meter(request),
            may_reload=is_admin(request), owner=owner(request), tools=tools)

    if tools is not None and tools.active:
        if body.n != 1:
            raise InvalidRequest("n: a request with tools takes one choice (n=1)",
                                 details={"errors": [{"field": "n",
                                                      "message": "tools take n=1"}]})

        async def one() -> Generation:
            return (await start())[0]
        return await _chat_with_tools(request, body, tools, one, reply_id, created)

    if body.stream:
        with stream_slot(request.app, request.get(CLAIMS)):
            generations = await start()
            model = generations[0].entry.id

            def chunk(text: str | None, finish: str | None, first: bool = False,
                      index: int = 0, logprobs: list[dict[str, Any]] | None = None
                      ) -> dict[str, Any]:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
                if text is not None:
                    delta["content"] = text
                return {"id": reply_id, "object": "chat.completion.chunk", "created": created,
                        "model": model, "system_fingerprint": None,
                        "choices": [{"index": index, "delta": delta,
                                     "logprobs": chat_logprobs(logprobs),
                                     "finish_reason": finish}]}
            return await stream_sse(request, generations, chunk, body.include_usage,
                                    opening=True, continuous_usage=body.continuous_usage)
    generations = await start()
    answers = await results(generations)
    return web.json_response({
        "id": reply_id, "object": "chat.completion", "created": created,
        "model": generations[0].entry.id, "system_fingerprint": None,
        "choices": [{"index": i, "message": {"role": "assistant", "content": a.text},
                     "logprobs": chat_logprobs((a.logprobs or []) if body.logprobs else None),
                     "finish_reason": finish_reason(a.finished.finish_reason)}
                    for i, a in enumerate(answers)],
        "usage": request_usage(generations, [a.finished.usage for a in answers])})


async def _chat_with_tools(request: web.Request, body: ChatRequest, tools: ToolSet,
                           start: Callable[[], Awaitable[Generation]], reply_id: str,
                           created: int) -> web.StreamResponse:
    """A chat answer that may hold tool calls (``render/openai_tools``)."""
    if body.stream:
        with stream_slot(request.app, request.get(CLAIMS)):
            generation = await start()
            base = {"id": reply_id, "object": "chat.completion.chunk", "created": created,
                    "model": generation.entry.id, "system_fingerprint": None}
            return await stream_tool_sse(request, generation, tools, base, body.include_usage,
                                         continuous_usage=body.continuous_usage)
    generation = await start()
    result = await generation.result()
    parsed = parse_text(result.text, tools.names())
    return web.json_response({
        "id": reply_id, "object": "chat.completion", "created": created,
        "model": generation.entry.id, "system_fingerprint": None,
        "choices": [{"index": 0, "message": tool_message(parsed), "logprobs": None,
                     "finish_reason": tool_reason(bool(parsed.calls),
                                                  result.finished.finish_reason)}],
        "usage": usage(result.finished.usage)})


async def completions(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, CompletionRequest)
    body.check_supported()
    options = body.options(body.max_tokens)
    service, meter, admin = request.app[INFERENCE], request_meter(request), is_admin(request)
    user = owner(request)
    reply_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    async def start(prompt: Prompt) -> list[Generation]:
        return await service.generate_many(options, body.n, prompt=prompt, n_ctx=body.n_ctx,
                                           meter=meter, may_reload=admin, owner=user)

    if body.stream:
        with stream_slot(request.app, request.get(CLAIMS)):
            generations = await start(body.prompts[0])
            model = generations[0].entry.id
            echoed = await echo_text(service, model, body.prompts[0]) if body.echo else ""

            offsets = [len(echoed)] * body.n  # where each choice's next text starts

            def chunk(text: str | None, finish: str | None, first: bool = False,
                      index: int = 0, logprobs: list[dict[str, Any]] | None = None
                      ) -> dict[str, Any]:
                text = echoed if first else text  # the opening chunk echoes the prompt
                legacy = None
                if logprobs is not None:
                    legacy = completion_logprobs(logprobs, offsets[index])
                    offsets[index] += sum(len(e["token"]) for e in logprobs)
                return {"id": reply_id, "object": "text_completion", "created": created,
                        "model": model, "system_fingerprint": None,
                        "choices": [{"index": index, "text": text or "", "logprobs": legacy,
                                     "finish_reason": finish}]}
            return await stream_sse(request, generations, chunk, body.include_usage,
                                    opening=body.echo, continuous_usage=body.continuous_usage)

    # n choices per prompt, numbered prompt-major as OpenAI does: prompt p's choice j is p*n+j
    started = await asyncio.gather(*(start(p) for p in body.prompts), return_exceptions=True)
    generations = [g for group in started if isinstance(group, list) for g in group]
    failed = next((e for e in started if isinstance(e, BaseException)), None)
    if failed is not None:
        for generation in generations:
            await generation.close()
        raise failed
    answers = await results(generations)
    model = generations[0].entry.id
    texts = ([await echo_text(service, model, p) for p in body.prompts] if body.echo
             else [""] * len(body.prompts))
    prompts = [text for text in texts for _ in range(body.n)]
    return web.json_response({
        "id": reply_id, "object": "text_completion", "created": created,
        "model": generations[0].entry.id, "system_fingerprint": None,
        "choices": [{"index": i, "text": (prompt + a.text) if body.echo else a.text,
                     "logprobs": (None if body.logprobs is None
                                  else completion_logprobs(a.logprobs or [], len(prompt))),
                     "finish_reason": finish_reason(a.finished.finish_reason)}
                    for i, (prompt, a) in enumerate(zip(prompts, answers))],
        "usage": request_usage(generations, [a.finished.usage for a in answers])})


def chat_logprobs(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """A chat choice's ``logprobs``: OpenAI's ``{content: [...], refusal: null}``."""
    return None if entries is None else {"content": entries, "refusal": None}


def completion_logprobs(entries: list[dict[str, Any]], offset: int) -> dict[str, Any]:
    """The legacy completions shape: parallel lists, alternatives as token -> logprob maps,
    each token's character offset in the choice's text (after ``offset``, an echoed prompt)."""
    offsets = []
    for found in entries:
        offsets.append(offset)
        offset += len(found["token"])
    return {"tokens": [e["token"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]}
                             for e in entries],
            "text_offset": offsets}


async def echo_text(service: InferenceService, model: str, prompt: Prompt) -> str:
    """The text ``echo`` repeats: the prompt itself, or the text of its token ids."""
    if isinstance(prompt, str):
        return prompt
    return (await service.detokenize(model, prompt))[1]


def _model_object(entry: ModelEntry) -> dict[str, Any]:
    try:
        created = int(entry.path.stat().st_mtime)
    except OSError:
        created = 0
    return {"id": entry.id, "object": "model", "created": created, "owned_by": OWNER}


async def list_models(request: web.Request) -> web.Response:
    groups = request.app[INFERENCE].registry.models()
    return web.json_response({"object": "list",
                              "data": [_model_object(entries[0]) for entries in groups.values()]})


async def get_model(request: web.Request) -> web.Response:
    service = request.app[INFERENCE]
    return web.json_response(_model_object(service.registry.resolve(request.match_info["model_id"])))
