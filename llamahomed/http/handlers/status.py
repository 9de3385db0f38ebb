"""GET /api/v1/status: what ``llamahomed status`` shows (loaded models, plans, slots, memory)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from aiohttp import web

from llamahomed import __version__
from llamahomed.core.resources import Machine
from llamahomed.http.keys import INFERENCE, MONITORING, STARTED_AT


def snapshot(app: web.Application, machine: Machine | None = None) -> dict[str, Any]:
    """The daemon's state right now (reads memory through the shared ResourceMonitor);
    ``machine``: the planner's reading, for the default ``max_loaded_models``."""
    service = app[INFERENCE]
    scheduler = service.scheduler
    workers = service.pool.workers()
    reading = app[MONITORING].resources.sample(["cpu", "memory", "gpu"])
    now = time.monotonic()
    models = []
    for model_id, worker in sorted(workers.items()):
        config = worker.config
        models.append({
            "id": model_id, "pid": worker.pid, "path": config.model_path,
            "plan": {"engine": config.engine, "n_ctx": config.n_ctx, "n_batch": config.n_batch,
                     "n_threads": config.n_threads, "n_gpu_layers": config.n_gpu_layers,
                     "n_slots": config.n_slots},
            "slots": worker.admission.slots, "slots_in_use": worker.admission.running,
            "queued": worker.admission.waiting, "kv_cache_usage": worker.kv_usage,
            "rss_bytes": reading.processes.get(f"worker:{model_id}", (0.0, 0))[1],
            "tokens_generated": worker.tokens_generated,
            "idle_s": round(now - worker.last_used, 1) if worker.in_flight == 0 else 0.0,
            "load_ms": worker.info.get("load_ms"), "from_spare": worker.from_spare,
            **scheduler.state(worker),
            **_placement(config, worker.info),
        })
    return {
        "version": __version__, "pid": os.getpid(),
        "uptime_s": round(now - app[STARTED_AT], 1),
        "models": models,
        "spare_worker": {"enabled": app[INFERENCE].config.settings.system_settings.spare_worker,
                         "pid": service.pool.spare.pid, "taken": service.pool.spare.taken},
        "cpu": {"system_percent": reading.cpu_percent,  # since the previous reading
                "daemon_percent": reading.processes.get("daemon", (0.0, 0))[0],
                "workers_percent": round(sum(reading.processes.get(f"worker:{m['id']}", (0.0, 0))[0]
                                             for m in models), 1)},
        "scheduler": scheduler.overview(machine or service.read_machine()),
        "memory": {"daemon_rss_bytes": reading.processes.get("daemon", (0.0, 0))[1],
                   "workers_rss_bytes": sum(m["rss_bytes"] for m in models),
                   "system_total_bytes": reading.memory_total,
                   "system_available_bytes": reading.memory_available},
        "gpus": [{"index": g.index, "name": g.name, "memory_used_bytes": g.memory_used,
                  "memory_total_bytes": g.memory_total, "utilization_percent": g.utilization}
                 for g in reading.gpus],
    }


def _placement(config: Any, info: dict[str, Any]) -> dict[str, Any]:
    """For a model split across RPC hosts: each device's layers (the output head counted as
    one, in layer order after the CPU's) and what llama.cpp allocated on each device."""
    if not config.devices:
        return {}
    return {"devices": [{"device": name, "layers": int(n)}
                        for name, n in zip(config.devices, config.tensor_split)],
            "buffers": info.get("buffers", {})}


async def status(request: web.Request) -> web.Response:
    machine = await asyncio.to_thread(request.app[INFERENCE].read_machine)
    return web.json_response(snapshot(request.app, machine))
