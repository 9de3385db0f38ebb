"""The engine in-process, without HTTP: what ``llamahome.server.LlamaServer`` stands on.

:class:`LocalEngine` runs what the daemon runs behind its HTTP layer (the same settings, model
registry, worker pool and request validation) and speaks in plain data: dicts in the native
API's shapes, text chunks, and :class:`~llamahomed.core.errors.LlamaHomeError` for errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from pydantic import ValidationError

from llamahomed.core.config_store import ConfigStore
from llamahomed.core.errors import ValidationFailed
from llamahomed.core.settings import Settings
from llamahomed.service.describe import describe
from llamahomed.service.generation import Delta, Errored, Generation
from llamahomed.service.inference import InferenceService
from llamahomed.service.options import PromptOptions, validation_details


class LocalEngine:
    """Models and workers of ``settings``, started on first use; ``close()`` stops them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._service: InferenceService | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def service(self) -> InferenceService | None:
        """The running service (None until started, and after ``close``)."""
        return self._service

    @property
    def running(self) -> bool:
        return self._service is not None

    async def start(self) -> InferenceService:
        """Prepare directories and the default model, open the registry and pool (idempotent)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._service is None:
                from llamahomed.daemon import prepare

                await asyncio.to_thread(prepare, self.settings)
                self._service = InferenceService.create(ConfigStore(self.settings))
                self._service.pool.spare.refresh()
            return self._service

    async def close(self) -> None:
        service, self._service = self._service, None
        if service is not None:
            await service.close()

    async def generate(self, prompt: str, options: dict[str, Any]) -> Generation:
        """Validate like ``POST /api/v1/process`` and submit."""
        service = await self.start()
        body = {k: v for k, v in {"prompt": prompt, **options}.items() if v is not None}
        try:
            fields = PromptOptions.model_validate(body)
        except ValidationError as exc:
            raise ValidationFailed("invalid request field(s)",
                                   details=validation_details(exc)) from exc
        return await service.generate(fields, prompt=fields.prompt, system=fields.system,
                                      raw=fields.raw, keep_alive=fields.keep_alive)

    async def process(self, prompt: str, options: dict[str, Any]) -> dict[str, Any]:
        """The process response (``text``, ``usage``, ``finish_reason``, ...)."""
        return (await (await self.generate(prompt, options)).result()).native()

    async def stream(self, prompt: str, options: dict[str, Any]) -> AsyncGenerator[str, None]:
        """The text as it is generated; closing the iterator early cancels the sequence."""
        generation = await self.generate(prompt, options)
        async for event in generation.events():
            if isinstance(event, Delta):
                yield event.text
            elif isinstance(event, Errored):
                raise event.error

    async def list_models(self) -> list[dict[str, Any]]:
        """The installed models, as ``GET /api/v1/models`` lists them."""
        service = await self.start()
        groups = await asyncio.to_thread(service.registry.models)
        machine = await asyncio.to_thread(service.read_machine)
        return [describe(service, entries, machine, detail=False) for entries in groups.values()]
