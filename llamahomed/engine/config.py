"""How a worker loads its model: one typed, validated record on both sides of the pipe.

The daemon builds a :class:`LoadConfig` from the plan (``InferenceService.load_config``), sends it
as JSON on the worker's command line, and the worker validates it again with
:meth:`LoadConfig.from_wire` before touching llama.cpp. The default the daemon's settings and the
worker share (``engine``) is the settings' own, so they cannot drift apart; ``n_slots`` is the
plan's (the setting's default is "planned"), 8 for a config built by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llamahomed.core.settings import SystemSettings

_SYSTEM = SystemSettings.model_fields


class LoadConfig(BaseModel):
    """Everything a worker needs to load its model (and nothing a request may change)."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model_path: str = Field(min_length=1)
    model_id: str = ""
    n_ctx: int = Field(ge=8, le=16_777_216)
    n_batch: int = Field(512, ge=1)
    n_ubatch: int = Field(512, ge=1)
    n_threads: int | None = Field(None, ge=1)
    n_gpu_layers: int = Field(0, ge=-1)
    n_slots: int = Field(8, ge=1, le=256)
    engine: Literal["batched", "sequential"] = _SYSTEM["engine"].default
    state_cache_bytes: int = Field(0, ge=0)
    prefill_step_ratio: float = Field(_SYSTEM["prefill_step_ratio"].default, ge=0.0, le=100.0)
    speculative: Literal["ngram", "off"] = _SYSTEM["speculative"].default
    draft_max: int = Field(_SYSTEM["draft_max"].default, ge=1, le=32)
    kv_type: str = "f16"
    swa_full: bool = True
    # Devices across hosts (ggml RPC, docs/Distributed.md): empty keeps llama.cpp's own choice.
    # ``devices``: in layer order, "gpu:N" (this host's N-th GPU) or "rpc:HOST:PORT#N" (the N-th
    # device of an RPC server); ``tensor_split``: layers (the output head counted as one) per device.
    rpc_servers: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    tensor_split: tuple[float, ...] = ()
    # Engine tuning for tests and benchmarks (the daemon keeps the defaults).
    kv_unified: bool = True
    prompt_cache: bool = True
    repack: bool = True
    flash_attn: bool | None = None
    seed: int | None = None
    verbose: bool = False

    def to_wire(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_wire(cls, data: str | Mapping[str, Any] | LoadConfig) -> LoadConfig:
        """Validate what came over the pipe (JSON text or a mapping; a LoadConfig as is)."""
        if isinstance(data, LoadConfig):
            return data
        if isinstance(data, str):
            return cls.model_validate_json(data)
        return cls.model_validate(dict(data))
