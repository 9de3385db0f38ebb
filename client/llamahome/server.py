"""The engine in-process, for embedding LlamaHome in another web app.

::

    from fastapi import FastAPI
    from llamahome.server import LlamaServer

    llama = LlamaServer()                      # the daemon's settings, models and workers
    app = FastAPI(lifespan=llama.lifespan)     # optional: stops the workers on shutdown

    @app.post("/process")
    async def process_prompt(prompt: str):
        return await llama.process(prompt)     # a ProcessResponse (a dataclass)

:class:`LlamaServer` runs what ``llamahomed`` runs behind its HTTP layer: the
same :class:`~llamahomed.core.settings.Settings` (environment, config file), model
registry, worker pool (one worker process per model, continuous batching) and
request validation, through :class:`llamahomed.service.inference.InferenceService`.
There is no HTTP and no token check: the embedding app decides who may call.
Results and errors are the client's types (:class:`~llamahome.types.ProcessResponse`,
:class:`~llamahome.error.APIError` subclasses), so code can move between
``APIClient`` and ``LlamaServer`` unchanged.

``llamahomed`` (and llama-cpp-python with it) is imported when a
``LlamaServer`` is created, never by ``import llamahome``; without it the
constructor raises an ``ImportError`` saying what to install. Workers start on
first use in the running event loop and stop on :meth:`LlamaServer.close`
(``async with``, or ``lifespan``); an unclosed server's workers exit when
this process does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .error import APIError, error_from_response
from .types import ModelInfo, ProcessResponse, StreamChunk

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from llamahomed.service.inference import Generation, InferenceService
    from llamahomed.core.settings import Settings

    from ._base import GenerationOptions, SamplingOptions

__all__ = ["LlamaServer"]

_INSTALL_HINT = (
    "llamahome.server runs the engine in this process and needs the llamahomed package "
    "with llama-cpp-python (pip install llamahomed); to talk to a running daemon use "
    "llamahome.client.APIClient instead"
)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """The daemon's errors as the client's, so both raise the same classes."""
    from llamahomed.core.errors import LlamaHomeError

    try:
        yield
    except LlamaHomeError as exc:
        raise error_from_response(exc.status, exc.envelope(), exc.headers) from exc


class LlamaServer:
    """The LlamaHome engine in this process (see the module docstring).

    ``settings`` is a :class:`llamahomed.core.settings.Settings`; when left out one
    is built from the environment and config file like the daemon's, with
    ``overrides`` (e.g. ``models_dir=...``) on top.
    """

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        try:
            from llamahomed.core.settings import Settings
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        self.settings: Settings = settings if settings is not None else Settings(**overrides)
        self._service: InferenceService | None = None
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        state = "running" if self._service is not None else "idle"
        return f"<LlamaServer {state} models_dir={str(self.settings.models_path)!r}>"

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Prepare directories and the default model, and open the registry and pool.

        Called by the first request; call it yourself to fail early. Idempotent.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._service is not None:
                return
            from llamahomed.core.config_store import ConfigStore
            from llamahomed.daemon import prepare
            from llamahomed.core.errors import StartupError
            from llamahomed.service.inference import InferenceService

            try:
                await asyncio.to_thread(prepare, self.settings)
            except StartupError as exc:
                raise APIError(str(exc), "startup_error") from exc
            self._service = InferenceService.create(ConfigStore(self.settings))

    async def close(self) -> None:
        """Stop every worker process. The server may be started again."""
        service, self._service = self._service, None
        if service is not None:
            await service.close()

    async def __aenter__(self) -> LlamaServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """An ASGI lifespan (``FastAPI(lifespan=llama.lifespan)``): start, then close."""
        await self.start()
        try:
            yield
        finally:
            await self.close()

    async def _running(self) -> InferenceService:
        await self.start()
        assert self._service is not None
        return self._service

    # -- generation -------------------------------------------------------------

    async def _generate(self, prompt: str, model: str | None,
                        options: dict[str, Any]) -> tuple[InferenceService, Generation]:
        from llamahomed.http.schemas import ProcessRequest, validation_details
        from llamahomed.core.errors import ValidationFailed
        from pydantic import ValidationError

        service = await self._running()
        body = {k: v for k, v in {"prompt": prompt, "model": model, **options}.items()
                if v is not None}
        try:
            fields = ProcessRequest.model_validate(body)
        except ValidationError as exc:
            raise ValidationFailed("invalid request field(s)",
                                   details=validation_details(exc)) from exc
        settings = service.config.settings
        params = fields.sampling(settings.model_settings, settings.system_settings)
        return service, await service.start(fields.model, prompt, params)

    async def process(
        self,
        prompt: str,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        **options: Unpack[SamplingOptions],
    ) -> ProcessResponse:
        """Generate a completion, as ``POST /api/v1/process`` would."""
        from llamahomed.http.handlers.native import collect

        with _translated():
            service, generation = await self._generate(
                prompt, model, {"max_tokens": max_tokens, "temperature": temperature, **options})
            return ProcessResponse.from_dict(await collect(service, generation))

    process_prompt = process

    async def stream(
        self,
        prompt: str,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        **options: Unpack[SamplingOptions],
    ) -> AsyncIterator[StreamChunk]:
        """Yield the completion's text as it is generated; closing the iterator early
        cancels the sequence at the worker's next step."""
        from llamahomed.engine.handle import sequence_error

        with _translated():
            service, generation = await self._generate(
                prompt, model, {"max_tokens": max_tokens, "temperature": temperature, **options})
            index = 0
            try:
                async for event in generation.stream.events():
                    if event["kind"] == "text":
                        yield StreamChunk(event["text"], index)
                        index += 1
                    elif event["kind"] == "error":
                        raise sequence_error(event)
                    elif event["kind"] == "done":
                        service.finished(generation, event)
            finally:
                await generation.stream.cancel()

    async def process_batch(
        self, prompts: Sequence[str], model: str | None = None,
        **options: Unpack[GenerationOptions],
    ) -> list[ProcessResponse]:
        """Every prompt at once (the worker decodes them together), results in order."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not one string")
        return list(await asyncio.gather(
            *(self.process(p, model, **options) for p in prompts)))

    # -- models -------------------------------------------------------------------

    async def list_models(self) -> list[ModelInfo]:
        """The installed models, as ``GET /api/v1/models`` lists them."""
        from llamahomed.http.handlers.models import describe

        service = await self._running()
        groups = await asyncio.to_thread(service.registry.models)
        machine = await asyncio.to_thread(service.read_machine)
        return [ModelInfo.from_dict(describe(service, entries, machine, detail=False))
                for entries in groups.values()]
