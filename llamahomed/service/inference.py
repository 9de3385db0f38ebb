"""From a validated request to a running Generation: plan, load, render the prompt, submit.

:meth:`InferenceService.generate` is the one way in for every dialect; the
:class:`~llamahomed.service.generation.Generation` it returns does its own bookkeeping.
"""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from llamahome.monitoring import AdvancedMetrics, Trace

from llamahomed.core.config_store import ConfigStore
from llamahomed.core.errors import (
    InvalidRequest,
    LlamaHomeError,
    ModelNotFound,
    PermissionDenied,
)
from llamahomed.core.resources import Machine, read_machine
from llamahomed.core.settings import SystemSettings
from llamahomed.engine.config import LoadConfig
from llamahomed.engine.handle import WorkerHandle
from llamahomed.engine.pool import WorkerPool
from llamahomed.engine.protocol import Accepted, Done, Failed, Prompt, SamplingParams, Tokens
from llamahomed.engine.spare import SpareKeeper, ram_allows
from llamahomed.observability import tracing
from llamahomed.planner import (
    LoadParams,
    Measurements,
    Plan,
    PlanRequest,
    candidates_from_entries,
    plan,
)
from llamahomed.planner.layout import tensor_split
from llamahomed.planner.remote import plan_across, remote_gpus, uses_remote
from llamahomed.registry.catalog import Catalog
from llamahomed.registry.store import ModelEntry, ModelRegistry
from llamahomed.service.chat_template import TemplateCache
from llamahomed.service.generation import Generation, Meter, failure
from llamahomed.service.load_options import NO_ASK, LoadOptions
from llamahomed.service.options import GenerationOptions
from llamahomed.service.performance import Performance
from llamahomed.service.scheduler import LoadRequest, Scheduler, view
from llamahomed.service.too_large import auto_quantize, too_large
from llamahomed.service.remote_hosts import RemoteHosts, in_use
from llamahomed.service.tools import ToolSet, render_prompt
from llamahomed.service.tools.forced import forced_params

if TYPE_CHECKING:
    from llamahomed.observability.metrics import Monitoring

log = structlog.get_logger(__name__)


class InferenceService:
    """What the handlers call. Holds no request state of its own."""

    def __init__(self, config: ConfigStore, registry: ModelRegistry, pool: WorkerPool,
                 performance: Performance, measurements: Measurements | None = None,
                 machine: Callable[[], Machine] = read_machine,
                 metrics: AdvancedMetrics | None = None) -> None:
        self.config = config
        self.registry = registry
        self.pool = pool
        self.performance = performance
        self.measurements = measurements
        self.read_machine = machine
        self._planned: dict[int, str] = {}  # worker pid -> the plan request it was loaded for
        self._asked: dict[int, LoadOptions] = {}  # worker pid -> what its first request asked
        self.metrics = metrics or AdvancedMetrics()
        self.refusing: LlamaHomeError | None = None  # set while shutting down
        self.templates = TemplateCache()
        self.scheduler = Scheduler(
            pool, max_loaded=lambda: config.settings.system_settings.max_loaded_models,
            wait_timeout=lambda: config.settings.system_settings.load_wait_timeout)
        self.remote_hosts = RemoteHosts()

    @classmethod
    def create(cls, config: ConfigStore, monitoring: Monitoring | None = None) -> InferenceService:
        """The registry, worker pool and measurements for ``config`` (the daemon's and
        ``llamahome.server.LlamaServer``'s one way to build them); ``close()`` when done.
        ``monitoring``: the daemon's metrics, fed by the pool and every request."""
        settings = config.settings

        def system() -> SystemSettings:  # read live: a reload changes them
            return config.settings.system_settings

        pool = WorkerPool(start_timeout=settings.worker_start_timeout,
                          keep_alive=lambda: system().keep_alive,
                          observer=monitoring.observer if monitoring else None,
                          drain_timeout=lambda: system().reload_drain_timeout,
                          spare=SpareKeeper(lambda: system().spare_worker,
                                            ram_allows(lambda: system().ram_reserve_bytes)))
        return cls(config, ModelRegistry(settings.models_path, Catalog.load()), pool,
                   Performance(settings.measurements_file),
                   Measurements(settings.state_dir / "allocations.json"),
                   metrics=monitoring.metrics if monitoring else None)

    async def close(self) -> None:
        """Stop every worker and save the speed measurements."""
        await self.pool.close()
        self.performance.save()

    def candidates(self, model: str | None, *, chat: bool = False) -> list[ModelEntry]:
        """The files a model name may load: every variant for an id, one for ``id:quant``.

        No name: the default model, or for a chat request (``chat``) the default chat model.
        """
        groups = self.registry.models()
        name = model or self._default_name(chat, groups)
        key = name.strip().lower()
        return groups[key] if key in groups else [self.registry.resolve(name, groups)]

    def _default_name(self, chat: bool, groups: dict[str, list[ModelEntry]]) -> str:
        """``default_model``; for chat ``default_chat_model``, unless that is empty, or not in
        the store while the default model has a chat template of its own."""
        defaults = self.config.settings.model_settings
        if not chat or not defaults.default_chat_model:
            return defaults.default_model
        try:
            self.registry.resolve(defaults.default_chat_model, groups)
        except ModelNotFound as missing:
            try:
                fallback = self.registry.resolve(defaults.default_model, groups)
            except ModelNotFound:
                raise missing from None
            if not fallback.info.has_chat_template:
                raise ModelNotFound(
                    f"chat requests without a model go to model_settings.default_chat_model "
                    f"({defaults.default_chat_model!r}), which is not installed: "
                    f"{missing.message}; or name a model that has a chat template",
                    details={**missing.details,
                             "default_chat_model": defaults.default_chat_model}) from None
            return defaults.default_model
        return defaults.default_chat_model

    def plan(self, entries: list[ModelEntry], machine: Machine | None = None,
             ask: LoadOptions = NO_ASK) -> Plan:
        """Plan a load of one of ``entries`` on this machine now (loads nothing); ``ask``: what
        the request asks of the load (constraints the planner keeps)."""
        request = ask.constrain(PlanRequest.from_settings(self.config.settings, ask.n_ctx))
        machine = machine or self.read_machine()
        system = self.config.settings.system_settings
        if system.rpc_servers and system.engine == "batched" and not machine.simulated:
            machine = self.remote_hosts.machine(machine, system.rpc_servers,
                                                in_use(self.pool.workers()), entries[0].id)
            return plan_across(candidates_from_entries(entries), machine, request,
                               self.measurements, system.rpc_policy)
        return plan(candidates_from_entries(entries), machine, request, self.measurements)

    def load_config(self, entry: ModelEntry, result: Plan | None = None) -> LoadConfig:
        """How the worker loads ``entry``: the plan's choice, for this file."""
        result = result or self.plan([entry])
        if result.choice is None:
            raise too_large([entry], result)
        system = self.config.settings.system_settings
        params = result.choice.params
        return LoadConfig(**_placement(result),
            model_id=entry.id, model_path=str(entry.path), n_ctx=params.n_ctx,
            n_batch=result.n_batch, n_threads=result.n_threads,
            n_gpu_layers=params.n_gpu_layers, n_ubatch=params.n_ubatch, kv_type=params.kv_type,
            swa_full=params.swa_full, state_cache_bytes=system.cache_size_bytes,
            prefill_step_ratio=system.prefill_step_ratio,
            speculative=system.speculative, draft_max=system.draft_max,
            n_slots=params.n_seq if system.engine == "batched" else 1, engine=system.engine)

    def _loaded(self, entries: list[ModelEntry], ask: LoadOptions,
                may_reload: bool) -> tuple[ModelEntry, LoadConfig] | None:
        """The running variant and its load, when the request fits it: a loaded model keeps
        its load (re-planning would count its own memory as taken and reload it smaller).

        A request that would need a reload (another variant, a larger ``n_ctx`` than the
        model is loaded with, other threads, GPU layers or batch than it loaded with) is refused unless ``may_reload`` (an admin token): reloading
        stops the model under every other user. None: nothing loaded, or a reload is due (the
        config changed since the load, or an admin asked); the pool drains the old worker.
        """
        running = self.pool.workers().get(entries[0].id)
        if running is None:
            return None
        entry = next((e for e in entries if str(e.path) == running.config.model_path), None)
        trained = entry.info.context_length if entry is not None else None
        unmet = ask.unmet(running.config, trained, self._asked.get(running.pid or 0, NO_ASK))
        if entry is None or unmet is not None:
            if not may_reload:
                raise self._reload_refused(running, entries[0], entry, unmet)
            return None
        if self._planned.get(running.pid or 0) != repr(PlanRequest.from_settings(self.config.settings)):
            return None
        return entry, running.config

    @staticmethod
    def _reload_refused(running: WorkerHandle, asked: ModelEntry, entry: ModelEntry | None,
                        unmet: tuple[str, int] | None) -> PermissionDenied:
        loaded = {"variant": Path(running.config.model_path).name, "n_ctx": running.config.n_ctx}
        if unmet is not None:
            field, value = unmet
            loaded[field] = getattr(running.config, field)
            why = f"is loaded with {field} {loaded[field]}; {field} {value}"
        else:
            why = f"is loaded as {loaded['variant']}; another variant"
        wanted: dict[str, Any] = {"model": asked.variant_id, "n_ctx": None}
        if unmet is not None:
            wanted[unmet[0]] = unmet[1]
        return PermissionDenied(
            f"model {asked.id!r} {why} would mean reloading it under every other user, which "
            "needs a token with the 'admin' scope; ask for what is loaded, or let an admin "
            "change system_settings (the model reloads once its running requests finish)",
            details={"required_scope": "admin", "model": asked.id, "loaded": loaded,
                     "asked": wanted})

    def select(self, model: str | None, n_ctx: int | None = None, *,
               may_reload: bool = True, chat: bool = False,
               load_options: LoadOptions | None = None) -> tuple[ModelEntry, LoadConfig]:
        """The variant and load settings a request gets (``n_ctx``: a larger context asked by
        this request; ``may_reload``: whether the request may reload a loaded model; ``chat``:
        no model named means the default chat model)."""
        ask = LoadOptions.of(n_ctx, load_options)
        return self._select(model, ask, may_reload=may_reload, chat=chat)[1:]

    def _select(self, model: str | None, ask: LoadOptions = NO_ASK, *, may_reload: bool = True,
                chat: bool = False) -> tuple[list[ModelEntry], ModelEntry, LoadConfig]:
        """``select``, with the variants it chose among."""
        entries = self.candidates(model, chat=chat)
        loaded = self._loaded(entries, ask, may_reload)
        if loaded is not None:
            return (entries, *loaded)
        empty = self._without_loaded()  # the scheduler decides what must make room
        result = self.plan(entries, empty, ask)
        if result.choice is None and auto_quantize(self.config.settings, entries, result):
            entries = self.candidates(model, chat=chat)
            result = self.plan(entries, empty, ask)
        if result.choice is None:
            raise too_large(entries, result)
        entry = result.choice.candidate.ref
        log.info("load_planned", model=entry.id, variant=entry.variant_id,
                 placement=result.choice.placement, n_gpu_layers=result.choice.params.n_gpu_layers,
                 n_ctx=result.choice.params.n_ctx, reasons=list(result.reasons))
        return entries, entry, self.load_config(entry, result)

    def _without_loaded(self) -> Machine:
        """This machine as it would be with none of the loaded models (what a model that fits
        nowhere even then is refused against)."""
        workers = self.pool.workers()
        return view(self.read_machine(), {k: w.held for k, w in workers.items()},
                    frozenset(workers))

    def _record_allocation(self, entry: ModelEntry, worker: WorkerHandle) -> None:
        """Keep what llama.cpp allocated at this load, for the next plan with these settings."""
        if (worker.pid or 0) in self._planned:
            return
        self._planned[worker.pid or 0] = repr(PlanRequest.from_settings(self.config.settings))
        buffers = worker.info.get("buffers")
        if self.measurements is not None and buffers:
            self.measurements.record(
            Measurements.key(entry.path.name, entry.size, load_params(worker.config).key()), buffers)

    async def _prepare(self, model: str | None, ask: LoadOptions = NO_ASK,
                       may_reload: bool = False,
                       chat: bool = False) -> tuple[list[ModelEntry], ModelEntry, LoadConfig]:
        """``select`` off the event loop (it reads the store and the machine): the variants, the
        one a request gets and how it loads, before anything is loaded."""
        return await asyncio.to_thread(functools.partial(self._select, model, ask,
                                                         may_reload=may_reload, chat=chat))

    async def _acquire(self, entries: list[ModelEntry], entry: ModelEntry, load: LoadConfig, *,
                       ask: LoadOptions = NO_ASK, may_reload: bool = False,
                       keep_alive: float | None | bool = False) -> tuple[ModelEntry, WorkerHandle]:
        """The worker for ``_prepare``'s answer, loaded on demand through the scheduler (which
        may evict idle models or wait for busy ones); its allocation recorded. The entry is the
        variant running (the same unless memory held elsewhere changed the plan).
        ``keep_alive``: how long the model stays loaded once idle, as this request asks (None:
        the setting); False leaves it as it is (tokenize, detokenize)."""

        def reuse() -> LoadConfig | None:
            running = self._loaded(entries, ask, may_reload)
            return running[1] if running is not None else None

        worker, result = await self.scheduler.acquire(LoadRequest(
            load, plan_on=lambda machine: self.plan(entries, machine, ask),
            read_machine=lambda: self.read_machine(),
            config_for=lambda chosen: self.load_config(self._chosen(chosen), chosen),
            refuse=lambda result: too_large(entries, result), reuse=reuse,
            refusing=lambda: self.refusing))
        if result is not None:
            entry = self._chosen(result)
        else:
            entry = next((e for e in entries if str(e.path) == worker.config.model_path), entry)
        self._record_allocation(entry, worker)
        self._asked.setdefault(worker.pid or 0, ask)
        if keep_alive is not False:
            worker.keep_alive = None if keep_alive is None else float(keep_alive)
        return entry, worker

    @staticmethod
    def _chosen(result: Plan) -> ModelEntry:
        assert result.choice is not None
        entry: ModelEntry = result.choice.candidate.ref
        return entry

    async def unload(self, model: str | None) -> bool:
        """Unload ``model`` now when it is idle, else as soon as its requests finish (its
        keep-alive becomes 0); whether it was loaded."""
        worker = self.pool.workers().get(self.candidates(model)[0].id)
        if worker is None:
            return False
        worker.keep_alive = 0.0
        if worker.idle:
            await self.pool.unload(worker.config.model_id, "unloaded")
        return True

    async def load(self, model: str | None, *, n_ctx: int | None = None,
                   keep_alive: float | None = None, may_reload: bool = False,
                   chat: bool = False, load_options: LoadOptions | None = None) -> ModelEntry:
        """Load a model without generating (Ollama's empty prompt); the variant loaded."""
        if self.refusing is not None:
            raise self.refusing
        ask = LoadOptions.of(n_ctx, load_options)
        entries, entry, load = await self._prepare(model, ask, may_reload, chat=chat)
        entry, _ = await self._acquire(entries, entry, load, ask=ask, may_reload=may_reload,
                                       keep_alive=keep_alive)
        return entry


    async def generate(self, options: GenerationOptions, *, prompt: Prompt | None = None,
                       messages: list[dict[str, Any]] | None = None, system: str | None = None,
                       raw: bool = True, n_ctx: int | None = None,
                       meter: Meter | None = None, may_reload: bool = False,
                       owner: str = "", keep_alive: float | None = None,
                       prefill: str = "", tools: ToolSet | None = None,
                       load_options: LoadOptions | None = None) -> Generation:
        """One generation: :meth:`generate_many` with ``n=1``."""
        generations = await self.generate_many(
            options, 1, prompt=prompt, messages=messages, system=system, raw=raw, n_ctx=n_ctx,
            meter=meter, may_reload=may_reload, owner=owner, keep_alive=keep_alive,
            prefill=prefill, tools=tools, load_options=load_options)
        return generations[0]

    async def generate_many(self, options: GenerationOptions, n: int, *,
                            prompt: Prompt | None = None,
                            messages: list[dict[str, Any]] | None = None,
                            system: str | None = None, raw: bool = True,
                            n_ctx: int | None = None, meter: Meter | None = None,
                            may_reload: bool = False, owner: str = "",
                            keep_alive: float | None = None,
                            prefill: str = "",
                            tools: ToolSet | None = None,
                            load_options: LoadOptions | None = None) -> list[Generation]:
        """``n`` generations of one prompt (OpenAI's ``n`` choices), or one (``generate``).

        The ``n`` sequences are siblings in the worker: the prompt is decoded once and its KV
        shared; with a seed, choice i samples with seed + i. Each is a Generation of its own
        (own events, own accounting); the prompt counts once towards ``meter``.

        The one way in: plan, load, render the prompt, submit; returns once the worker
        accepted the prompt (or raises its error: context too long, queue full, ...).

        Give ``prompt`` or chat ``messages`` (rendered through the model's chat template, whose
        special tokens the rendered text may spell; without ``options.model`` they go to the
        default chat model). A ``prompt`` is sent verbatim when ``raw`` (OpenAI's completions,
        whose prompt may also be token ids, decoded as given);
        otherwise (the native API) it is one user message after an optional ``system`` message,
        rendered through the template when the model has one, and a base model (no template)
        gets ``system``, a blank line, then the prompt. ``n_ctx``: a larger context this
        request asks the model to be loaded with. ``meter``: called with the sequence's total
        tokens when it finishes (the caller's token budget). ``may_reload``: the caller (an
        admin) may have a loaded model reloaded for this request. ``owner``: who asks (the
        token's user): slots and queue places are shared fairly between owners.
        ``keep_alive``: seconds the model stays loaded once idle after this request (None: the
        setting; negative: until evicted; 0: unload when idle).
        ``prefill``: text the answer starts with, after the rendered ``messages`` (Anthropic's
        final assistant message); the generation continues it.
        ``tools``: the chat request's tools (rendered with the messages; a forced choice adds
        its grammar). ``load_options``: threads, GPU layers or batch this request asks the model
        to be loaded with (Ollama's ``num_thread``, ``num_gpu``, ``num_batch``); a loaded model
        that differs reloads for an admin, and refuses anyone else, as a larger ``n_ctx`` does.
        """
        if self.refusing is not None:
            raise self.refusing
        if not raw and not isinstance(prompt, (str, type(None))):
            raise InvalidRequest("a token-id prompt is sent verbatim: it needs raw",
                                 details={"errors": [{"field": "prompt",
                                                      "message": "token ids need raw"}]})
        if raw and system is not None:
            raise InvalidRequest("raw sends the prompt verbatim: it takes no system text",
                                 details={"errors": [{"field": "system",
                                                      "message": "not allowed with raw"}]})
        params = options.sampling(self.config.settings.model_settings,
                                  self.config.settings.system_settings)
        trace = self._trace()
        ask = LoadOptions.of(n_ctx, load_options)
        entries, entry, load = await self._prepare(options.model, ask, may_reload,
                                                   chat=messages is not None)
        if messages is not None and not entry.info.has_chat_template:
            raise InvalidRequest(
                f"model {entry.id!r} has no chat template (tokenizer.chat_template in its GGUF); "
                "use /v1/completions with a prompt in the model's own format",
                details={"errors": [{"field": "model", "message": "the model has no chat template"}]})
        if tools is not None and tools.choice.forced:
            params = forced_params(params, tools, entry.info.chat_template or "")
        if isinstance(prompt, str) and not raw:
            if entry.info.has_chat_template:
                messages = prompt_messages(prompt, system)
            elif system is not None:
                prompt = f"{system}\n\n{prompt}"
        with trace.phase("load"):
            entry, worker = await self._acquire(entries, entry, load, ask=ask,
                                                may_reload=may_reload, keep_alive=keep_alive)
        if messages is not None:
            prompt = render_prompt(self.templates.get(entry, worker.info), messages,
                                   tools) + prefill
        if prompt is None:
            raise InvalidRequest("a generation needs a prompt or messages")
        return await self._submit(entry, worker, prompt, params, n, special=messages is not None,
                                  trace=trace, meter=meter, owner=owner)

    async def tokenize(self, model: str | None, content: str, *, add_special: bool = False,
                       parse_special: bool = True,
                       with_pieces: bool = False) -> tuple[ModelEntry, Tokens]:
        """The model's tokens for ``content`` (llama-server's ``/tokenize``), from its worker."""
        worker, entry = await self._worker_for(model)
        tokens = await worker.vocab({"op": "tokenize", "content": content,
                                     "add_special": add_special, "parse_special": parse_special,
                                     "with_pieces": with_pieces})
        return entry, tokens

    async def detokenize(self, model: str | None, tokens: list[int]) -> tuple[ModelEntry, str]:
        """The text of ``tokens`` in the model's vocabulary (llama-server's ``/detokenize``)."""
        worker, entry = await self._worker_for(model)
        answer = await worker.vocab({"op": "detokenize", "tokens": tokens})
        return entry, answer.content or ""

    async def count_tokens(self, model: str | None, messages: list[dict[str, Any]] | None = None,
                           prefill: str = "", *, prompt: str | None = None,
                           system: str | None = None,
                           tools: ToolSet | None = None) -> tuple[ModelEntry, int]:
        """The prompt tokens a generation would take (OpenAI's ``input_tokens``, Anthropic's
        count_tokens): ``messages`` through the model's chat template (then ``prefill``, the
        answer's given start), or a ``prompt`` (after an optional ``system``) as the native API
        renders it; tokenized in the worker exactly as a submitted prompt is. ``tools`` are
        shown as :meth:`generate` shows them, so they count too."""
        if self.refusing is not None:
            raise self.refusing
        entries, entry, load = await self._prepare(model, chat=messages is not None)
        if messages is not None and not entry.info.has_chat_template:
            raise InvalidRequest(
                f"model {entry.id!r} has no chat template (tokenizer.chat_template in its GGUF): "
                "its messages cannot be counted; send the input as a string",
                details={"errors": [{"field": "input", "message": "the model has no chat template"}]})
        if prompt is not None:
            if entry.info.has_chat_template:
                messages = prompt_messages(prompt, system)
            elif system is not None:
                prompt = f"{system}\n\n{prompt}"
        entry, worker = await self._acquire(entries, entry, load)
        text = prompt or ""
        if messages is not None:
            text = render_prompt(self.templates.get(entry, worker.info), messages,
                                 tools) + prefill
        answer = await worker.vocab({"op": "tokenize", "content": text, "add_special": True,
                                     "parse_special": messages is not None, "with_pieces": False})
        return entry, len(answer.tokens)

    async def _worker_for(self, model: str | None) -> tuple[WorkerHandle, ModelEntry]:
        if self.refusing is not None:
            raise self.refusing
        entry, worker = await self._acquire(*await self._prepare(model))
        return worker, entry

    async def embed(self, model: str | None, inputs: Sequence[str | list[int]], *,
                    keep_alive: float | None = None) -> tuple[ModelEntry, Done]:
        """Embed ``inputs`` (texts or token-id lists) with any model: its GGUF's pooling where it
        declares one, mean pooling otherwise (``engine/worker/embed.py``); ``keep_alive`` as
        for :meth:`generate`."""
        if self.refusing is not None:
            raise self.refusing
        entries, entry, load = await self._prepare(model)
        entry, worker = await self._acquire(entries, entry, load, keep_alive=keep_alive)
        stream = await worker.embed(list(inputs))
        try:
            event = await stream.next_event()
        finally:
            await stream.cancel()
        if isinstance(event, Failed):
            raise failure(event)
        if not isinstance(event, Done) or event.embeddings is None:
            raise LlamaHomeError("the worker answered an embedding request without embeddings")
        return entry, event

    def _trace(self) -> Trace:
        context = tracing.current()
        return self.metrics.trace(context.request_id if context else None)

    async def _submit(self, entry: ModelEntry, worker: WorkerHandle, prompt: Prompt,
                      params: SamplingParams, n: int, *, special: bool, trace: Trace,
                      meter: Meter | None, owner: str) -> list[Generation]:
        """Hand the prompt to the worker (``n`` sibling sequences); returns once accepted.

        ``special=True`` lets the prompt's text spell special tokens (a rendered chat template's
        ``<|im_start|>``); user prompts never do.
        """
        if self.refusing is not None:  # shutdown began while the model was loading
            raise self.refusing
        context = tracing.current()
        system = self.config.settings.system_settings
        admission = worker.admission
        admission.max_queue, admission.timeout = system.max_queue, system.queue_timeout
        admission.owner_share = system.queue_share_per_token
        streams = await worker.submit_many(prompt, params, n, special=special, owner=owner,
                                           request_id=context.request_id if context else "")
        if self.config.settings.log_prompts:
            log.info("prompt", model=entry.id, seq=[s.seq_id for s in streams], prompt=prompt)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        generations: list[Generation] = []
        try:
            for stream in streams:
                first = await stream.next_event()
                if isinstance(first, Failed):
                    raise failure(first)
                prompt_tokens = first.prompt_tokens if isinstance(first, Accepted) else 0
                if generations:  # a sibling: its own trace, from the same load
                    trace = self._trace()
                    trace.phases.update(generations[0].trace.phases)
                generations.append(Generation(entry, stream, prompt_tokens, created, trace,
                                              self._account, meter,
                                              counts_prompt=not generations))
        except BaseException:  # refused, or cancelled while the worker checks the prompt
            for stream in streams:
                await stream.cancel()
            raise
        return generations

    def _account(self, generation: Generation, done: Done) -> dict[str, Any] | None:
        """A sequence's ``done`` event: record its speed, finish its trace (returned, to be
        reported, when tracing is on) and add it to the request's log line."""
        self.performance.record(generation.entry, done)
        trace = generation.trace
        trace.add("queue", generation.stream.queue_ms(done))
        trace.add("prefill", float(done.timings.get("prefill_ms", 0.0)))
        trace.add("decode", float(done.timings.get("decode_ms", 0.0)))
        data: dict[str, Any] | None = self.metrics.finish_trace(trace)
        context = tracing.current()
        if context is not None:
            context.add_sequence(generation.entry.id, done.usage, data)
        return data


def prompt_messages(prompt: str, system: str | None = None) -> list[dict[str, Any]]:
    """A native prompt as chat messages: the optional system message, then one user message."""
    messages: list[dict[str, Any]] = [] if system is None else [{"role": "system",
                                                                  "content": system}]
    return [*messages, {"role": "user", "content": prompt}]


def _placement(result: Plan) -> dict[str, Any]:
    """A plan across RPC hosts as llama.cpp's ``devices`` and ``tensor_split`` (layer counts,
    so llama.cpp places exactly what the plan shows); nothing for a load on this machine."""
    if not uses_remote(result):
        return {}
    local = [g for g in result.machine.gpus if g.backend != "rpc"]
    remote = remote_gpus(result.machine)
    devices = tuple(f"gpu:{i}" for i in range(len(local))) + tuple(f"rpc:{g.endpoint}" for g in remote)
    servers = tuple(dict.fromkeys(g.endpoint.rpartition("#")[0] for g in remote))
    return {"rpc_servers": servers, "devices": devices,
            "tensor_split": tensor_split(result.details["layout"]), "flash_attn": False}


def load_params(config: LoadConfig) -> LoadParams:
    """The planner's view of a worker's load settings (the key of its measurements)."""
    return LoadParams(n_ctx=config.n_ctx, n_gpu_layers=config.n_gpu_layers,
                      n_ubatch=min(config.n_ubatch, config.n_batch), n_seq=config.n_slots,
                      kv_type=config.kv_type,
                      flash_attn=config.engine == "batched" and config.flash_attn is not False,
                      swa_full=config.swa_full)
