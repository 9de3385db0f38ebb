"""Choosing a variant, GPU layers, context, KV type, batch and threads for a machine.

Order of preference (docs/Planner.md):

1. the best-quality variant that fits entirely on the GPU(s), with an F16 KV cache if it fits
   with one, else Q8_0 (only where flash attention is on, which a quantized V cache needs);
2. otherwise the variant and layer count the policy prefers, among partial offloads and the
   CPU (when RAM allows): ``quality`` takes the best variant that fits, with as many GPU layers
   as fit; ``speed`` the option with the shortest estimated time per token (weights streamed
   from RAM at ~50 GB/s, from VRAM at ~1 TB/s);
3. otherwise, with no explicit context, the same at a smaller context (halving, not below
   2048) and a smaller ubatch; and last a refusal that says what would fit.

Quality is measured, not named: bits per weight from the header's real tensor sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from llamahomed.core.resources import Machine
from llamahomed.planner.candidates import Candidate, fill_shapes, quality
from llamahomed.planner.estimate import DevicePart, Estimate, LoadParams, estimate
from llamahomed.planner.layout import device_layout
from llamahomed.planner.measured import Measurements
from llamahomed.planner.shape import ModelShape

Policy = Literal["quality", "speed"]
Placement = Literal["gpu", "partial", "cpu"]
GiB, MiB = 2**30, 2**20
MIN_CTX = 2048
# Slots when the settings leave them to the planner (batched engine): the most of these that
# fits, where more than BASE_SLOTS need a fair share of SLOT_MIN_CTX cells of the unified KV
# cache each (n_ctx is one pool that every slot draws from).
AUTO_SLOTS = (32, 16, 8, 4, 2, 1)
BASE_SLOTS = 8
SLOT_MIN_CTX = 256
CPU_BANDWIDTH = 50e9     # bytes/s a CPU streams weights at (decode is memory bound)
GPU_BANDWIDTH = 1000e9


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for; ``None`` means "planner decides"."""

    n_ctx: int = 4096
    n_ctx_explicit: bool = False
    policy: Policy = "quality"
    n_gpu_layers: int | None = None
    n_threads: int | None = None
    n_batch: int = 512
    kv_type: str | None = None
    n_seq: int | None = 1  # None: the planner chooses (``slot_counts``)
    flash_attn: bool = True
    swa_full: bool = True
    ram_reserve: int = 1 * GiB
    vram_reserve: int = 512 * MiB
    # Which RPC servers the plan may use, and when (planner/remote.py); a change reloads.
    rpc_servers: tuple[str, ...] = ()
    rpc_policy: str = "when_needed"

    @classmethod
    def from_settings(cls, settings: Any, n_ctx: int | None = None) -> PlanRequest:
        """From the daemon's Settings (fields a user set count as explicit)."""
        system = settings.system_settings
        batched = system.engine == "batched"
        return cls(n_ctx=n_ctx or system.n_ctx,
                   n_ctx_explicit=n_ctx is not None or "n_ctx" in system.model_fields_set,
                   policy=system.plan_policy, n_gpu_layers=system.n_gpu_layers,
                   n_threads=system.n_threads, n_batch=settings.n_batch,
                   kv_type=system.kv_cache_type, n_seq=system.n_slots if batched else 1,
                   flash_attn=batched, swa_full=True, ram_reserve=system.ram_reserve_bytes,
                   vram_reserve=system.vram_reserve_bytes,
                   rpc_servers=tuple(system.rpc_servers) if batched else (),
                   rpc_policy=system.rpc_policy)


@dataclass(frozen=True)
class Option:
    """One way to load one variant, and whether it fits."""

    candidate: Candidate
    params: LoadParams
    placement: Placement
    estimate: Estimate
    fits: bool
    note: str = ""

    @property
    def gpu_layers(self) -> int:
        return self.params.n_gpu_layers

    def seconds_per_token(self) -> float:
        est = self.estimate
        return (est.cpu.weights / CPU_BANDWIDTH
                + sum(g.weights for g in est.gpus) / GPU_BANDWIDTH)

    def to_dict(self) -> dict[str, Any]:
        shape = self.candidate.shape
        return {"variant": self.candidate.name, "quantization": self.candidate.quantization,
                "bits_per_weight": round(shape.bits_per_weight, 2) if shape else None,
                "placement": self.placement, "n_gpu_layers": self.params.n_gpu_layers,
                "n_ctx": self.params.n_ctx, "kv_type": self.params.kv_type,
                "n_ubatch": self.params.n_ubatch, "swa_full": self.params.swa_full,
                "fits": self.fits, "note": self.note,
                "memory": self.estimate.to_dict()}


@dataclass(frozen=True)
class Plan:
    """The chosen option (``None``: nothing fits), what was weighed, and why."""

    choice: Option | None
    options: tuple[Option, ...]
    reasons: tuple[str, ...]
    n_threads: int
    n_batch: int
    machine: Machine
    refusal: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def memory_required(self) -> int | None:
        return self.choice.estimate.total if self.choice else None

    def to_dict(self) -> dict[str, Any]:
        choice = self.choice
        return {"fits": choice is not None,
                "variant": choice.candidate.name if choice else None,
                "quantization": choice.candidate.quantization if choice else None,
                "placement": choice.placement if choice else None,
                "n_gpu_layers": choice.params.n_gpu_layers if choice else None,
                "n_ctx": choice.params.n_ctx if choice else None,
                "kv_type": choice.params.kv_type if choice else None,
                "n_batch": self.n_batch, "n_ubatch": choice.params.n_ubatch if choice else None,
                "swa_full": choice.params.swa_full if choice else None,
                "n_threads": self.n_threads,
                "memory": choice.estimate.to_dict() if choice else None,
                "layout": self.details.get("layout") if choice else None,
                "reasons": list(self.reasons), "refusal": self.refusal or None,
                "machine": self.machine.to_dict(),
                "options": [o.to_dict() for o in self.options]}


class _Fitter:
    """Evaluates options against one machine."""

    def __init__(self, machine: Machine, req: PlanRequest, measurements: Measurements | None):
        self.machine, self.req, self.measurements = machine, req, measurements
        self.backend = machine.gpus[0].backend if machine.gpus else "cpu"
        if any(g.backend == "rpc" for g in machine.gpus):  # llama.cpp's placement rule applies
            self.backend = "rpc"
        free = [max(0, g.free - req.vram_reserve) for g in machine.gpus]
        self.gpu_budget = free
        self.ram_budget = max(0, machine.ram_available - req.ram_reserve)
        self.fractions = tuple(float(f) for f in free) if any(free) else (1.0,)

    def evaluate(self, c: Candidate, p: LoadParams, placement: Placement) -> Option:
        assert c.shape is not None
        est = estimate(c.shape, p, backend=self.backend, gpu_fractions=self.fractions)
        est = self._measured(c, p, est)
        fits, note = self._fits(est)
        return Option(c, p, placement, est, fits, note)

    def _measured(self, c: Candidate, p: LoadParams, est: Estimate) -> Estimate:
        if self.measurements is None or not c.file_key:
            return est
        seen = self.measurements.get(f"{c.file_key}|{p.key()}")
        if not seen:
            return est
        cpu = sum(seen.get("CPU", {}).values())
        gpus = [sum(v.values()) for k, v in sorted(seen.items()) if k != "CPU"]
        if len(gpus) != len(est.gpus):
            return est
        return Estimate(DevicePart(cpu, 0, 0, est.cpu.overhead),
                        tuple(DevicePart(b, 0, 0, g.overhead) for b, g in zip(gpus, est.gpus)),
                        measured=True)

    def _fits(self, est: Estimate) -> tuple[bool, str]:
        m = self.machine
        if m.apple and est.gpus:  # one pool: the GPU share is bounded, and both come from RAM
            if est.vram > self.gpu_budget[0]:
                return False, f"needs {_gib(est.vram)} of the {_gib(self.gpu_budget[0])} GPU budget"
            if est.total > self.ram_budget:
                return False, f"needs {_gib(est.total)} of {_gib(self.ram_budget)} unified memory"
            return True, ""
        for i, part in enumerate(est.gpus):
            if part.total > self.gpu_budget[i]:
                return False, f"GPU {i} needs {_gib(part.total)}, {_gib(self.gpu_budget[i])} free"
        if est.cpu.total > self.ram_budget:
            return False, f"needs {_gib(est.cpu.total)} RAM, {_gib(self.ram_budget)} available"
        return True, ""

    def options_for(self, c: Candidate, n_ctx: int, n_ubatch: int, swa_full: bool,
                    n_seq: int | None = None) -> list[Option]:
        """Full offload, the most layers that fit, and CPU, for each KV type worth trying."""
        assert c.shape is not None
        req, n_layer = self.req, c.shape.n_layer
        kv_types = [req.kv_type] if req.kv_type else (["f16", "q8_0"] if req.flash_attn else ["f16"])
        kv_types = [kv for kv in kv_types if kv_type_ok(c.shape, kv)] or ["f16"]
        n_seq = n_seq or req.n_seq or BASE_SLOTS
        base = LoadParams(n_ctx=n_ctx, n_ubatch=n_ubatch, n_seq=n_seq,
                          flash_attn=req.flash_attn, swa_full=swa_full)
        out: list[Option] = []
        for kv in kv_types:
            p = replace(base, kv_type=kv)
            if req.n_gpu_layers is not None:
                ngl = n_layer + 1 if req.n_gpu_layers < 0 else min(req.n_gpu_layers, n_layer + 1)
                ngl = ngl if self.machine.gpus else 0
                kind: Placement = "cpu" if ngl == 0 else "gpu" if ngl > n_layer else "partial"
                out.append(self.evaluate(c, replace(p, n_gpu_layers=ngl), kind))
                continue
            if self.machine.gpus:
                full = self.evaluate(c, replace(p, n_gpu_layers=n_layer + 1), "gpu")
                out.append(full)
                if not full.fits:
                    partial = self._most_layers(c, p, n_layer)
                    if partial is not None:
                        out.append(partial)
            if kv == kv_types[0]:  # auto: a quantized KV cache only helps if it buys GPU layers
                out.append(self.evaluate(c, p, "cpu"))
        return out

    def more_slots(self, choice: Option) -> Option:
        """``choice`` with the most auto slots that keep a fair share of its context and still
        fit, same variant and placement (more slots never cost quality or GPU layers)."""
        for n_seq in fair_slots(choice.params.n_ctx):
            if n_seq <= choice.params.n_seq:
                break
            option = self.evaluate(choice.candidate, replace(choice.params, n_seq=n_seq),
                                   choice.placement)
            if option.fits:
                return option
        return choice

    def _most_layers(self, c: Candidate, p: LoadParams, n_layer: int) -> Option | None:
        lo, hi, best = 1, n_layer, None
        while lo <= hi:  # memory grows with layers: binary search the largest that fits
            mid = (lo + hi) // 2
            opt = self.evaluate(c, replace(p, n_gpu_layers=mid), "partial")
            if opt.fits:
                best, lo = opt, mid + 1
            else:
                hi = mid - 1
        return best


def slot_counts(req: PlanRequest, n_ctx: int) -> tuple[int, ...]:
    """Slot counts a plan at ``n_ctx`` tries, in order: the setting's, or (auto)
    ``BASE_SLOTS`` then fewer (``_Fitter.more_slots`` raises the chosen one afterwards)."""
    if req.n_seq is not None:
        return (req.n_seq,)
    return tuple(n for n in AUTO_SLOTS if n <= BASE_SLOTS)


def fair_slots(n_ctx: int) -> tuple[int, ...]:
    """Auto slot counts above ``BASE_SLOTS`` that keep ``SLOT_MIN_CTX`` KV cells each, most
    first."""
    return tuple(n for n in AUTO_SLOTS if n > BASE_SLOTS and n_ctx // n >= SLOT_MIN_CTX)


def kv_type_ok(shape: ModelShape, kv: str) -> bool:
    """A quantized KV cache needs head sizes that are whole blocks of 32 values."""
    return kv in ("f16", "f32") or (shape.key_length % 32 == 0 and shape.value_length % 32 == 0)


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


def _pick(options: list[Option], policy: Policy) -> tuple[Option | None, str]:
    fitting = [o for o in options if o.fits]
    full = [o for o in fitting if o.placement == "gpu"]
    if full:  # best weights first; an F16 KV cache when that variant fits with one
        best = max(full, key=lambda o: (quality(o.candidate), o.params.kv_type == "f16"))
        kv = best.params.kv_type
        return best, (f"{best.candidate.quantization} is the best quality that fits entirely "
                      f"on the GPU" + ("" if kv == "f16" else f" (with a {kv} KV cache)"))
    rest = [o for o in fitting if o.placement != "gpu"]
    if not rest:
        return None, ""
    if policy == "speed":
        best = min(rest, key=lambda o: (o.seconds_per_token(), -quality(o.candidate)))
        why = "the fastest estimated decode among the options that fit (policy speed)"
    else:
        best = max(rest, key=lambda o: (quality(o.candidate), o.params.n_gpu_layers,
                                        o.params.kv_type == "f16"))
        why = "the best quality that fits, with as many GPU layers as fit (policy quality)"
    n_layer = best.candidate.shape.n_layer if best.candidate.shape else 0
    where = (f"{best.params.n_gpu_layers} of {n_layer} layers on the GPU"
             if best.placement == "partial" else "on the CPU")
    kv = "" if best.params.kv_type == "f16" else f" with a {best.params.kv_type} KV cache"
    return best, f"{best.candidate.quantization} {where}{kv}: {why}"


def plan(candidates: Sequence[Candidate], machine: Machine, req: PlanRequest,
         measurements: Measurements | None = None) -> Plan:
    """Weigh every variant on ``machine`` and choose; never raises for a model that does not fit
    (the plan then has no choice and a ``refusal`` saying what would fit)."""
    if not candidates:
        raise ValueError("plan() needs at least one candidate")
    cands, notes = fill_shapes(candidates)
    reasons = list(machine.notes) + notes
    fitter = _Fitter(machine, req, measurements)
    trained = min((c.shape.context_train for c in cands if c.shape and c.shape.context_train),
                  default=req.n_ctx)
    n_ctx = max(64, min(req.n_ctx, trained))
    if n_ctx < req.n_ctx:
        reasons.append(f"n_ctx {n_ctx}: the model was trained for {trained} tokens "
                       f"(asked for {req.n_ctx})")
    ubatch = min(req.n_batch, 512)
    swa = any(any(c.shape.swa_layers) for c in cands if c.shape) and req.swa_full
    # Fallbacks, in order: a window-sized SWA cache, smaller contexts, smaller ubatches.
    levels = [(n_ctx, ubatch, req.swa_full)] + ([(n_ctx, ubatch, False)] if swa else [])
    if not req.n_ctx_explicit:
        ctx = n_ctx
        while ctx // 2 >= MIN_CTX:
            ctx //= 2
            levels.append((ctx, ubatch, not swa and req.swa_full))
    levels += [(levels[-1][0], ub, levels[-1][2]) for ub in (256, 128) if ub < ubatch]
    weighed: list[Option] = []
    choice: Option | None = None
    for ctx, ub, swa_full in levels:
        for n_seq in slot_counts(req, ctx):  # fewer slots before a smaller context
            options = [o for c in cands for o in fitter.options_for(c, ctx, ub, swa_full, n_seq)]
            weighed += options
            choice, why = _pick(options, req.policy)
            if choice is not None:
                break
        if choice is not None:
            reasons.append(why)
            if req.n_seq is None:
                choice = fitter.more_slots(choice)
                reasons.append(_slots_reason(choice.params.n_seq, ctx))
            if swa_full != req.swa_full:
                reasons.append("sliding-window layers keep only their window (not a full-size "
                               "SWA cache): less memory, less prompt-cache reuse")
            if (ctx, ub) != levels[0][:2]:
                reasons.append(f"nothing fits at n_ctx {n_ctx}: using n_ctx {ctx}, n_ubatch {ub}")
            break
    threads = _threads(machine, req, choice, reasons)
    n_batch = max(req.n_batch, choice.params.n_ubatch) if choice else req.n_batch
    if choice is not None:
        reasons += _explain(choice, req, fitter)
        n_layer = choice.candidate.shape.n_layer if choice.candidate.shape else 0
        layout = device_layout(n_layer, choice.params.n_gpu_layers, machine.gpus, fitter.fractions)
        return Plan(choice, tuple(weighed), tuple(reasons), threads, n_batch, machine,
                    details={"layout": layout})
    smallest = min(weighed, key=lambda o: o.estimate.total)
    refusal = (f"no variant fits this machine: the smallest option, "
               f"{smallest.candidate.quantization} on the {smallest.placement} at n_ctx "
               f"{smallest.params.n_ctx}, needs {_gib(smallest.estimate.total)} "
               f"({smallest.note}). ")
    details: dict[str, Any] = {
        "needed_bytes": smallest.estimate.total, "ram_budget_bytes": fitter.ram_budget,
        "gpu_budget_bytes": fitter.gpu_budget, "variants": sorted({c.quantization for c in cands})}
    shorter = _fits_shorter(cands, fitter, smallest.params, req.policy) if req.n_ctx_explicit else None
    if shorter is not None:
        refusal += (f"It would fit with n_ctx {shorter.params.n_ctx} ({shorter.candidate.quantization}"
                    f" on the {shorter.placement}). ")
        details["fits_with_n_ctx"] = shorter.params.n_ctx
    refusal += "Or free memory, use a smaller quantization (`llamahomed quantize`) or a smaller model"
    return Plan(None, tuple(weighed), tuple(reasons), threads, n_batch, machine, refusal, details)


def _slots_reason(n_seq: int, n_ctx: int) -> str:
    most = max(fair_slots(n_ctx), default=BASE_SLOTS)
    why = ("the most that keep a fair share of the shared KV cache each" if n_seq == most
           else "the most that fit the memory budget")
    return (f"n_slots {n_seq}: {why} ({n_ctx // n_seq} of the {n_ctx} context cells each "
            "when all are busy; one request may still use all of them)")


def _fits_shorter(cands: list[Candidate], fitter: _Fitter, p: LoadParams,
                  policy: Policy) -> Option | None:
    """The largest halved context (down to 256) at which something fits, if any."""
    ctx = p.n_ctx // 2
    while ctx >= 256:
        options = [o for c in cands for o in fitter.options_for(c, ctx, p.n_ubatch, p.swa_full)]
        choice, _ = _pick(options, policy)
        if choice is not None:
            return choice
        ctx //= 2
    return None


def _threads(machine: Machine, req: PlanRequest, choice: Option | None, reasons: list[str]) -> int:
    if req.n_threads:
        reasons.append(f"n_threads {req.n_threads}: set in the settings")
        return req.n_threads
    threads = machine.cpu_physical
    load = machine.load_average[0]
    if load >= machine.cpu_logical:  # said, not acted on: the load may be our own model
        reasons.append(f"n_threads {threads}: one per physical core (the machine is busy: "
                       f"load average {load:.1f} on {machine.cpu_logical} logical cores)")
    else:
        reasons.append(f"n_threads {threads}: one per physical core")
    return threads


def _explain(choice: Option, req: PlanRequest, fitter: _Fitter) -> list[str]:
    out = []
    if req.n_gpu_layers is not None:
        out.append(f"n_gpu_layers {req.n_gpu_layers}: set in the settings")
    if req.kv_type and choice.params.kv_type == req.kv_type:
        out.append(f"KV cache {req.kv_type}: set in the settings")
    elif req.kv_type:
        out.append(f"KV cache f16, not {req.kv_type} as set: the model's head size "
                   f"({choice.candidate.shape.key_length if choice.candidate.shape else '?'}) "
                   "is not a whole number of 32-value blocks")
    if req.n_ctx_explicit:
        out.append(f"n_ctx {choice.params.n_ctx}: asked for explicitly")
    if choice.estimate.measured:
        out.append("memory from what llama.cpp allocated at an earlier load with these settings")
    if fitter.machine.apple and choice.estimate.gpus:
        out.append(f"unified memory: the GPU may use {_gib(fitter.gpu_budget[0])}")
    return out


def choose_variant(candidates: Sequence[Candidate], machine: Machine, req: PlanRequest) -> Candidate | None:
    """The variant ``plan`` would load on ``machine`` (``None`` when none fits)."""
    result = plan(candidates, machine, req)
    return result.choice.candidate if result.choice else None
