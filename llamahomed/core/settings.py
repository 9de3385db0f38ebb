"""The daemon's one settings class.

Sources, strongest first: arguments (the CLI's flags), ``LLAMAHOME_*`` environment variables
(nested with ``__``, e.g. ``LLAMAHOME_MODEL_SETTINGS__DEFAULT_MODEL``), the TOML config file,
then the defaults below. Directories follow platformdirs: config in the user config dir, models
in the user data dir, runtime files (secret, token, pid, logs) in the user state dir.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from llamahomed.core.errors import StartupError

APP_NAME = "llamahome"
DEFAULT_PORT = 8910
DEFAULT_MODEL_ID = "gemma3-270m"
DEFAULT_CHAT_MODEL_ID = "smollm2-135m-instruct"

# What a model id, ``id:quant``, alias or file name may look like (never a path).
MODEL_NAME = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,127}(:[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$")
# One rule for tier names, in settings and on tokens alike.
TIER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
TIER_NAME_RULE = "a tier name is 1 to 32 of a-z, 0-9, '_' and '-', starting with a letter or digit"
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: str | int) -> int:
    """Bytes in a size such as ``"10GB"`` (powers of 1000) or ``"512MiB"`` (powers of 1024)."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"not a size: {value!r} (use e.g. '10GB', '512MiB' or a number of bytes)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "B").lower()])


def check_host_entry(entry: str) -> str:
    """One ``pull_allowed_hosts`` entry, normalized: a host name, ``.domain`` (``*.domain`` is
    the same), an IP address, a CIDR range, or ``*`` (ValueError when it is none of these)."""
    value = entry.strip().lower().rstrip(".")
    if value == "*":
        return value
    try:
        return str(ipaddress.ip_network(value.strip("[]"), strict=False)) if "/" in value else \
            str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        pass
    name = value[2:] if value.startswith("*.") else value[1:] if value.startswith(".") else value
    if not name or len(name) > 253 or not all(
            label and len(label) <= 63 and label.replace("-", "").isalnum() and label[0] != "-"
            for label in name.split(".")):
        raise ValueError(f"{entry!r} is not a host name, '.domain', '*.domain', IP address, CIDR "
                         "range or '*'")
    return "." + name if value.startswith(("*.", ".")) else name


def format_size(n_bytes: int) -> str:
    """A short human size (powers of 1000, like the guide's ``"8GB"``)."""
    for unit, factor in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n_bytes >= factor:
            value = n_bytes / factor
            return f"{value:.0f}{unit}" if value >= 10 else f"{value:.1f}{unit}"
    return f"{n_bytes}B"


class ModelSettings(BaseModel):
    """Request defaults: what a request gets for each field it leaves out."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    default_model: str = Field(DEFAULT_MODEL_ID, min_length=1, max_length=200,
                               description="Model used when a request names none.")
    default_chat_model: str = Field(
        DEFAULT_CHAT_MODEL_ID, max_length=200,
        description="Model a chat request (messages) gets when it names none. Empty, or not "
                    "in the store: the default model, when that has a chat template.")
    max_tokens: int = Field(100, ge=1, le=1_000_000,
                            description="max_tokens when a request gives none.")
    temperature: float = Field(0.7, ge=0.0, le=5.0,
                               description="Sampling temperature when a request gives none.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling when a request gives none.")
    top_k: int = Field(40, ge=0, le=100_000, description="Top-k sampling when a request gives none (0 = off).")
    repeat_penalty: float = Field(1.1, ge=0.0, le=10.0,
                                  description="Repetition penalty when a request gives none (1.0 = off).")

    @field_validator("default_model", "default_chat_model")
    @classmethod
    def _model_name(cls, value: str, info: ValidationInfo) -> str:
        if info.field_name == "default_chat_model" and not value.strip():
            return ""  # no chat default of its own: the default model
        if not MODEL_NAME.match(value.strip()):
            raise ValueError("a model name: letters, digits, '.', '_', '-' (and one ':' before a "
                             "quantization), no paths")
        return value.strip()


def check_consistency(defaults: ModelSettings, system: SystemSettings) -> None:
    """Refuse settings that contradict each other (ValueError, said field by field)."""
    if defaults.max_tokens > system.max_tokens_limit:
        raise ValueError(f"model_settings.max_tokens ({defaults.max_tokens}) is over "
                         f"system_settings.max_tokens_limit ({system.max_tokens_limit}): every "
                         "request without max_tokens would be refused")


class SystemSettings(BaseModel):
    """Daemon-wide limits and resources that may change while it runs."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    cache_size: str = Field("1GB", description="RAM allowed for saved prompt-cache state, e.g. '10GB'.")
    max_requests_per_minute: int = Field(60, ge=1, le=1_000_000,
                                         description="Default per-token request rate limit.")
    keep_alive: float = Field(300.0, allow_inf_nan=False,
                              description="Seconds an idle model stays loaded (0 = unload at once, "
                                          "negative = until evicted or the daemon stops); a "
                                          "request's own keep_alive overrides it for its model.")
    max_loaded_models: int | None = Field(
        None, ge=1, le=256,
        description="Models loaded at once; loading one more evicts the least recently used idle "
                    "model (default: 3 per GPU, 3 on a machine without GPUs, as Ollama does).")
    load_wait_timeout: float = Field(
        60.0, ge=0.0, le=3600.0,
        description="Seconds a request for a model that does not fit waits for busy models to "
                    "finish (and be evicted) before a 507 model_too_large naming what holds the "
                    "memory.")
    max_tokens_limit: int = Field(8192, ge=1, le=1_000_000,
                                  description="Largest max_tokens a request may ask for.")
    n_ctx: int = Field(4096, ge=64, le=1_048_576,
                       description="Context size a model is loaded with (never above its trained context).")
    n_threads: int | None = Field(None, ge=1, le=1024,
                                  description="CPU threads per model (default: physical cores).")
    n_gpu_layers: int | None = Field(None, ge=-1,
                                     description="GPU layers (default: all when a GPU backend exists, else 0).")
    n_slots: int | None = Field(
        None, ge=1, le=256,
        description="Sequences a model decodes together (continuous batching); default: "
                    "planned per load, 8, up to 32 while each slot keeps a fair share of at "
                    "least 256 tokens of the shared n_ctx (16 at n_ctx 4096), fewer only when "
                    "memory is tight (docs/Planner.md).")
    spare_worker: bool = Field(
        True, description="Keep one worker process started ahead, llama.cpp imported and "
                          "its backend initialised, so that a model load pays only for the "
                          "model (replaced in the background after each load when the RAM "
                          "allows; it holds no model and is not a loaded model).")
    prefill_step_ratio: float = Field(
        1.8, ge=0.0, le=100.0, allow_inf_nan=False,
        description="While sequences decode, a step carries only as many prompt tokens as keep "
                    "it within this many times a decode-only step (their next token waits for "
                    "it); 0 fills the batch with prompt tokens.")
    max_queue: int = Field(64, ge=0, le=100_000,
                           description="Requests that may wait for a slot per model; more get 503.")
    queue_timeout: float = Field(60.0, gt=0,
                                 description="Seconds a request may wait for a slot before a 503.")
    queue_share_per_token: float = Field(
        0.5, gt=0.0, le=1.0,
        description="Share of a model's queue one token user may hold; waiting users take "
                    "turns for free slots (round robin), so a burst slows its sender first.")
    reload_drain_timeout: float = Field(
        60.0, ge=0.0, le=3600.0,
        description="Seconds a loaded model's running requests get to finish before it is "
                    "reloaded with new settings (a config change, an admin's larger n_ctx); "
                    "requests still running then end with a retryable 503 model_reloading.")
    max_streams_per_token: int = Field(
        16, ge=1, le=10_000,
        description="Streams one token user may have open at once (NDJSON, OpenAI SSE and "
                    "WebSocket generations together); more get 429 too_many_streams.")
    max_sockets_per_token: int = Field(
        8, ge=1, le=10_000,
        description="WebSockets one token user may have open at once; more get 429.")
    engine: Literal["batched", "sequential"] = Field(
        "batched", description="Worker engine: continuous batching, or one sequence at a time.")
    speculative: Literal["ngram", "off"] = Field(
        "ngram", description="Speculative decoding without a draft model: 'ngram' drafts the "
                           "tokens that followed the sequence's last tokens where they occurred "
                           "before in its prompt or output (quoting, extracting, editing text) "
                           "and verifies them in the same decode step; the output is the same "
                           "as without. Applies when a model next loads.")
    draft_max: int = Field(8, ge=1, le=32,
                           description="Most tokens one speculative draft may hold.")
    auto_quantize: bool = Field(
        False, description="When only a too-large unquantized variant of a model is on disk, let the "
                           "planner make a smaller one with llama.cpp's quantizer (see docs/Models.md).")
    plan_policy: Literal["quality", "speed"] = Field(
        "quality", description="When a model does not fit entirely on the GPU: keep the best "
        "quantization with fewer GPU layers (quality) or take the fastest option (speed).")
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] | None = Field(
        None, description="KV cache type (default: f16, q8_0 when that lets a model fit on the GPU).")
    ram_reserve: str = Field("1GiB", description="RAM the planner leaves free for everything else.")
    vram_reserve: str = Field("512MiB", description="Memory the planner leaves free on each GPU.")
    rpc_servers: list[str] = Field(
        default_factory=list, max_length=16,
        description="ggml RPC servers ('host:port', started with `llamahomed rpc serve`) whose "
                    "devices the planner may split a model across, applied at the next load. "
                    "ggml's RPC protocol has no authentication or encryption: use loopback "
                    "addresses, an SSH tunnel or WireGuard (docs/Distributed.md).")
    rpc_policy: Literal["when_needed", "always"] = Field(
        "when_needed", description="When to use rpc_servers: only for a model that does not "
        "fit this machine (when_needed; the network is slower than memory), or whenever "
        "their devices can take layers (always).")
    pull_allowed_hosts: list[str] = Field(
        default_factory=list, max_length=1000,
        description="Hosts a pull may download from besides the catalog's: 'name', '.domain' "
                    "(and its subdomains), an IP address, a CIDR range, or '*' (any host). "
                    "Loopback and private addresses are refused unless named here explicitly "
                    "(not by '*'); see docs/Models.md.")
    pull_max_size: str = Field(
        "64GiB", description="Largest file a pull downloads when the catalog gives no size for "
                             "it, enforced while the bytes arrive (with or without Content-Length).")

    @field_validator("rpc_servers")
    @classmethod
    def _check_rpc_servers(cls, value: list[str]) -> list[str]:
        out = []
        for entry in value:
            entry = entry.strip()
            host, sep, port = entry.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"not an RPC server address: {entry!r} (use host:port)")
            if entry in out:
                raise ValueError(f"RPC server {entry!r} is listed twice")
            out.append(entry)
        return out

    @field_validator("pull_allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        return [check_host_entry(entry) for entry in value]

    @field_validator("cache_size", "ram_reserve", "vram_reserve", "pull_max_size")
    @classmethod
    def _check_size(cls, value: str) -> str:
        parse_size(value)
        return value.strip()

    @property
    def cache_size_bytes(self) -> int:
        return parse_size(self.cache_size)

    @property
    def ram_reserve_bytes(self) -> int:
        return parse_size(self.ram_reserve)

    @property
    def vram_reserve_bytes(self) -> int:
        return parse_size(self.vram_reserve)

    @property
    def pull_max_size_bytes(self) -> int:
        return parse_size(self.pull_max_size)


class TierSettings(BaseModel):
    """One rate-limit tier: what a token whose ``tier`` claim names it may use."""

    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(None, ge=1, le=1_000_000, description=(
        "Requests per minute (the bucket's refill rate); unset: "
        "system_settings.max_requests_per_minute, which the config endpoint changes live."))
    burst: int | None = Field(None, ge=1, le=1_000_000, description=(
        "Requests that may arrive at once (the bucket's capacity); unset: rpm/6 rounded up "
        "(ten seconds' worth)."))
    tpm: int | None = Field(None, ge=1, le=1_000_000_000, description=(
        "Prompt plus generated tokens per minute, debited with each request's actual usage "
        "(unset: no token limit)."))


def _default_tiers() -> dict[str, TierSettings]:
    return {"basic": TierSettings(), "pro": TierSettings(rpm=300, burst=50),
            "enterprise": TierSettings(rpm=1000, burst=100)}


class RateLimitSettings(BaseModel):
    """Per-token rate limits: token buckets per token subject, chosen by the token's tier."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="Apply rate limits (429 when a token is over its tier).")
    default_tier: str = Field("basic", min_length=1, max_length=64, description=(
        "Tier for tokens whose tier claim names no tier defined here."))
    tiers: dict[str, TierSettings] = Field(default_factory=_default_tiers, description=(
        "Tiers by name ([rate_limits.tiers.NAME] in the file), each with rpm, burst, tpm."))
    max_keys: int = Field(10_000, ge=1, le=10_000_000, description=(
        "Token subjects whose buckets are kept at most per tier (idle buckets are dropped; "
        "read at start)."))

    @field_validator("tiers")
    @classmethod
    def _some_tiers(cls, value: dict[str, TierSettings]) -> dict[str, TierSettings]:
        if not value:
            raise ValueError("at least one tier is needed")
        if not all(TIER_NAME.fullmatch(name) for name in value):
            raise ValueError(TIER_NAME_RULE)
        return value

    @model_validator(mode="after")
    def _default_is_a_tier(self) -> RateLimitSettings:
        if self.default_tier not in self.tiers:
            raise ValueError(f"default_tier {self.default_tier!r} is not one of the tiers")
        return self


def default_config_file() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads the TOML config file named by ``config_file`` (argument, env, or the default)."""

    def __init__(self, settings_cls: type[BaseSettings], init_kwargs: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.path = Path(init_kwargs.get("config_file")
                         or os.environ.get("LLAMAHOME_CONFIG_FILE")
                         or default_config_file())

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ is overridden

    def __call__(self) -> dict[str, Any]:
        return read_config_file(self.path)


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML config file as a dict; a missing file is empty, a broken one a StartupError."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StartupError(f"cannot read config file {path}: {exc}") from exc


class Settings(BaseSettings):
    """Everything the daemon can be told. Built once in ``main()`` and passed down."""

    model_config = SettingsConfigDict(env_prefix="LLAMAHOME_", env_nested_delimiter="__",
                                      extra="forbid", protected_namespaces=())

    host: str = Field("127.0.0.1", description="Address to bind (loopback by default).")
    allow_remote: bool = Field(
        False, description="Allow a non-loopback bind (without it the daemon refuses to start).")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names accepted besides localhost, 127.0.0.1, [::1] and the bound "
                    "address (DNS-rebinding guard); '*' accepts any.")
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins (e.g. 'http://localhost:3000') allowed for CORS and WebSockets; "
                    "empty: no cross-origin browser access.")
    metrics_public: bool = Field(
        False, description="Serve GET /metrics without a token (for a local Prometheus).")
    max_header_bytes: int = Field(32 * 1024, ge=1024, le=60 * 1024,
                                  description="Largest total size of a request's headers (431 beyond).")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="TCP port (0 = any free port).")
    config_file: Path = Field(default_factory=default_config_file,
                              description="TOML config file (created by POST /api/v1/config).")
    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir(APP_NAME)),
                           description="Data directory (holds models/ unless models_dir is set).")
    models_dir: Path | None = Field(None, description="Model store (default: <data_dir>/models).")
    state_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_state_dir(APP_NAME)),
                            description="Runtime state: secret, admin token, pid file, logs.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="Log format: JSON lines off a terminal, readable on one (auto).")
    max_body_bytes: int = Field(4 * 2**20, ge=1024, description="Largest request body accepted.")
    header_timeout: float = Field(
        10.0, gt=0, le=3600,
        description="Seconds a client has to send a request's headers, from their first byte; "
                    "the connection is closed beyond (slowloris guard).")
    body_timeout: float = Field(
        30.0, gt=0, le=3600,
        description="Seconds a client has to send a request's whole body once its headers are "
                    "in; the connection is closed beyond (an endless chunked body included).")
    keepalive_timeout: float = Field(
        15.0, gt=0, le=3600,
        description="Seconds an idle connection (no request arriving, none running; a fresh "
                    "one included) stays open. A response being streamed is never idle.")
    max_connections_per_peer: int = Field(
        64, ge=1, le=100_000,
        description="Connections one peer address may hold open at once; more are answered "
                    "503 server_busy and closed at once.")
    max_connections: int = Field(
        512, ge=1, le=1_000_000,
        description="Connections open at once from all peers together; more are answered 503 "
                    "server_busy and closed at once.")
    n_batch: int = Field(512, ge=8, le=65536, description="Prompt tokens fed to llama.cpp per decode.")
    worker_start_timeout: float = Field(120.0, gt=0, description="Seconds a model load may take.")
    drain_timeout: float = Field(10.0, ge=0, description="Seconds in-flight streams get on shutdown.")
    tracing: bool = Field(
        False, description="Put each request's phases (queue, load, prefill, decode ms) in its "
                           "final response line and its log line.")
    log_prompts: bool = Field(
        False, description="Debug only: log prompts (never logged otherwise).")
    install_default_model: bool = Field(
        True, description="Install the embedded default model into the store at start when missing.")
    model_settings: ModelSettings = Field(default_factory=lambda: ModelSettings(),
                                          description="Request defaults ([model_settings] in the file).")
    system_settings: SystemSettings = Field(default_factory=lambda: SystemSettings(),
                                            description="Limits and resources ([system_settings]).")
    rate_limits: RateLimitSettings = Field(default_factory=lambda: RateLimitSettings(),
                                           description="Rate-limit tiers ([rate_limits]).")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        check_consistency(self.model_settings, self.system_settings)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        init_kwargs = getattr(init_settings, "init_kwargs", {})
        return (init_settings, env_settings, _TomlFileSource(settings_cls, init_kwargs))

    @property
    def models_path(self) -> Path:
        return self.models_dir or (self.data_dir / "models")

    @property
    def secret_file(self) -> Path:
        return self.state_dir / "secret.key"

    @property
    def token_store_file(self) -> Path:
        return self.state_dir / "tokens.db"

    @property
    def admin_token_file(self) -> Path:
        return self.state_dir / "admin.token"

    @property
    def runtime_file(self) -> Path:
        return self.state_dir / "daemon.json"

    @property
    def lock_file(self) -> Path:
        """Held (``flock``) by the running daemon: one instance per state dir."""
        return self.state_dir / "llamahomed.lock"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "llamahomed.pid"

    @property
    def log_file(self) -> Path:
        """Where ``llamahomed start --detach`` sends the daemon's output."""
        return self.state_dir / "llamahomed.log"

    @property
    def measurements_file(self) -> Path:
        return self.state_dir / "measurements.json"
