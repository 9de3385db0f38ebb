// Live: the daemon's own metrics (/metrics and /api/v1/status) every 2 s, as charts.
import { api, el, notice, size } from "./api.js";
import { Chart } from "./chart.js";

const PERIOD_MS = 2000;

// Sum of every sample of each metric (all labels), from Prometheus' text format.
export function parseMetrics(text) {
  const sums = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([^\s]+)/.exec(line);
    if (!match) continue;
    const value = Number(match[3]);
    if (Number.isFinite(value)) sums[match[1]] = (sums[match[1]] || 0) + value;
  }
  return sums;
}

const SERIES = [
  { key: "tps", title: "Tokens per second", unit: "tok/s" },
  { key: "running", title: "Requests running", unit: "" },
  { key: "waiting", title: "Requests waiting", unit: "" },
  { key: "kv", title: "KV cache in use", unit: "%", max: 100 },
  { key: "ttft", title: "Time to first token", unit: "ms" },
  { key: "latency", title: "Request latency", unit: "ms" },
  { key: "cpu", title: "CPU (machine)", unit: "%", max: 100 },
  { key: "ram", title: "RAM in use (machine)", unit: "%", max: 100 },
  { key: "gpu", title: "GPU memory in use", unit: "%", max: 100 },
];

export class Live {
  constructor() {
    this.charts = {};
    this.outputs = {};
    this.timer = null;
    this.previous = null;
    const box = document.getElementById("charts");
    for (const series of SERIES) {
      const canvas = el("canvas", { role: "img", "aria-label": series.title, "data-series": series.key });
      const output = el("output", { "data-series": series.key }, "–");
      box.append(el("div", { class: "chart" }, el("h2", {}, series.title, output), canvas));
      this.charts[series.key] = new Chart(canvas, { unit: series.unit, max: series.max ?? null });
      this.outputs[series.key] = output;
    }
  }

  enter() {
    this.tick();
    this.timer = setInterval(() => this.tick(), PERIOD_MS);
  }

  leave() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async tick() {
    let status;
    let metrics;
    try {
      [status, metrics] = await Promise.all([api("/api/v1/status"), api("/metrics")]);
    } catch (error) {
      notice(error.status === 403 ? "Live charts need a token with the admin scope."
        : `Could not read the metrics: ${error.message}`);
      this.leave();
      return;
    }
    const now = performance.now();
    const sums = parseMetrics(metrics);
    const before = this.previous;
    this.previous = { now, sums };
    const rate = (name) => before ? Math.max(0, (sums[name] || 0) - (before.sums[name] || 0))
      / ((now - before.now) / 1000) : null;
    const mean = (name) => {
      if (!before) return null;
      const count = (sums[`${name}_count`] || 0) - (before.sums[`${name}_count`] || 0);
      const total = (sums[`${name}_sum`] || 0) - (before.sums[`${name}_sum`] || 0);
      return count > 0 ? (total / count) * 1000 : null;
    };
    const models = status.models || [];
    const memory = status.memory || {};
    const gpus = status.gpus || [];
    const gpuTotal = gpus.reduce((a, g) => a + (g.memory_total_bytes || 0), 0);
    const values = {
      tps: rate("vllm:generation_tokens_total"),
      running: models.reduce((a, m) => a + m.slots_in_use, 0),
      waiting: models.reduce((a, m) => a + m.queued, 0),
      kv: Math.max(0, ...models.map((m) => m.kv_cache_usage * 100)),
      ttft: mean("vllm:time_to_first_token_seconds"),
      latency: mean("vllm:e2e_request_latency_seconds") ?? mean("llamahome_http_request_duration_seconds"),
      cpu: status.cpu ? status.cpu.system_percent : null,
      ram: memory.system_total_bytes
        ? (1 - memory.system_available_bytes / memory.system_total_bytes) * 100 : null,
      gpu: gpuTotal ? gpus.reduce((a, g) => a + g.memory_used_bytes, 0) / gpuTotal * 100 : null,
    };
    for (const series of SERIES) {
      const value = values[series.key];
      const rounded = value === null || value === undefined ? null : Math.round(value * 10) / 10;
      this.charts[series.key].push(rounded);
      this.outputs[series.key].textContent = rounded === null ? "–" : `${rounded} ${series.unit}`.trim();
    }
    this.outputs.ram.title = `workers ${size(memory.workers_rss_bytes)}, daemon ${size(memory.daemon_rss_bytes)}`;
  }
}
