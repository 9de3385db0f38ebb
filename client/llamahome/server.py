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
same ``Settings`` (environment, config file), model
registry, worker pool (one worker process per model, continuous batching) and
request validation, through ``llamahomed.service.facade.LocalEngine``.
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

    from llamahomed.core.settings import Settings
    from llamahomed.service.facade import LocalEngine

    from ._base import GenerationOptions, SamplingOptions

__all__ = ["LlamaServer"]

_INSTALL_HINT = (
    "llamahome.server runs the engine in this process and needs the llamahomed package "
    "with llama-cpp-python (pip install 'llamahome[server]'); to talk to a running daemon use "
    "llamahome.client.APIClient instead"
)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """The daemon's errors as the client's, so both raise the same classes."""
    from llamahomed.core.errors import LlamaHomeError, StartupError

    try:
        yield
    except LlamaHomeError as exc:
        raise error_from_response(exc.status, exc.envelope(), exc.headers) from exc
    except StartupError as exc:
        raise APIError(str(exc), "startup_error") from exc


class LlamaServer:
    """The LlamaHome engine in this process (see the module docstring): a thin shim over
    ``llamahomed.service.facade.LocalEngine`` that speaks the client's types.

    ``settings`` is a ``llamahomed.core.settings.Settings``; when left out one is built from
    the environment and config file like the daemon's, with ``overrides`` (e.g.
    ``models_dir=...``) on top.
    """

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        try:
            from llamahomed.core.settings import Settings
            from llamahomed.service.facade import LocalEngine
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        self.settings: Settings = settings if settings is not None else Settings(**overrides)
        self._engine: LocalEngine = LocalEngine(self.settings)

    def __repr__(self) -> str:
        state = "running" if self._engine.running else "idle"
        return f"<LlamaServer {state} models_dir={str(self.settings.models_path)!r}>"

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Prepare directories and the default model, and open the registry and pool.

        Called by the first request; call it yourself to fail early. Idempotent.
        """
        with _translated():
            await self._engine.start()

    async def close(self) -> None:
        """Stop every worker process. The server may be started again."""
        await self._engine.close()

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

    # -- generation -------------------------------------------------------------

    async def process(
        self,
        prompt: str,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        **options: Unpack[SamplingOptions],
    ) -> ProcessResponse:
        """Generate a completion, as ``POST /api/v1/process`` would."""
        with _translated():
            return ProcessResponse.from_dict(await self._engine.process(prompt, {
                "model": model, "max_tokens": max_tokens, "temperature": temperature, **options}))

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
        with _translated():
            chunks = self._engine.stream(prompt, {
                "model": model, "max_tokens": max_tokens, "temperature": temperature, **options})
            try:
                index = 0
                async for text in chunks:
                    yield StreamChunk(text, index)
                    index += 1
            finally:
                await chunks.aclose()

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
        with _translated():
            return [ModelInfo.from_dict(m) for m in await self._engine.list_models()]
