"""What one request asks of a model's load: a context, threads, GPU layers, a batch size.

``None`` leaves a field to the settings and the planner. The planner keeps what is asked
(:meth:`LoadOptions.constrain`: a context is a floor it may not go under, threads, GPU layers and
batch are taken as given, GPU layers still only as far as they fit), and a loaded model serves
the request only when its load meets it (:meth:`LoadOptions.unmet`): a context at least as large
(capped at what the model was trained for), and exactly the threads, GPU layers and batch
asked, or a load that was asked the same. Ollama's ``num_ctx``, ``num_thread``, ``num_gpu`` and ``num_batch`` land here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llamahomed.engine.config import LoadConfig
    from llamahomed.planner import PlanRequest


@dataclass(frozen=True)
class LoadOptions:
    n_ctx: int | None = None
    n_threads: int | None = None
    n_gpu_layers: int | None = None  # -1: all layers
    n_batch: int | None = None

    @classmethod
    def of(cls, n_ctx: int | None, asked: LoadOptions | None) -> LoadOptions:
        """``asked`` with the request's ``n_ctx`` (either may be absent)."""
        base = asked or NO_ASK
        return base if n_ctx is None else dataclasses.replace(base, n_ctx=n_ctx)

    def constrain(self, request: PlanRequest) -> PlanRequest:
        """The plan request with what this request asks in place of the settings."""
        if self.n_threads is None and self.n_gpu_layers is None and self.n_batch is None:
            return request
        return dataclasses.replace(
            request,
            n_threads=request.n_threads if self.n_threads is None else self.n_threads,
            n_gpu_layers=request.n_gpu_layers if self.n_gpu_layers is None else self.n_gpu_layers,
            n_batch=request.n_batch if self.n_batch is None else self.n_batch)

    def unmet(self, config: LoadConfig, trained: int | None,
              loaded_for: LoadOptions) -> tuple[str, int] | None:
        """The first asked field a running load does not meet, and the value asked; or None.
        ``loaded_for``: what the load itself was asked (the planner may have given fewer GPU
        layers than asked, or all of them for -1: the same ask is met by that load)."""
        if self.n_ctx is not None:
            wanted = min(self.n_ctx, trained) if trained else self.n_ctx
            if config.n_ctx < wanted:
                return "n_ctx", self.n_ctx
        for field in ("n_threads", "n_gpu_layers", "n_batch"):
            value = getattr(self, field)
            if value is not None and value not in (getattr(config, field),
                                                   getattr(loaded_for, field)):
                return field, value
        return None


NO_ASK = LoadOptions()
