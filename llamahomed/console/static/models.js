// Models: what is installed, the planner's choice and reasons; load, unload, pull, import, delete.
import { api, el, ndjson, notice, size } from "./api.js";

const $ = (id) => document.getElementById(id);

export class Models {
  constructor() {
    $("pull-form").addEventListener("submit", (event) => { event.preventDefault(); this.pull(); });
    $("import-form").addEventListener("submit", (event) => { event.preventDefault(); this.import(); });
  }

  enter() { this.refresh(); }
  leave() {}

  async refresh() {
    let models;
    try {
      ({ models } = await api("/api/v1/models"));
    } catch (error) {
      notice(`Could not list the models: ${error.message}`);
      return;
    }
    $("models-table").tBodies[0].replaceChildren(...models.map((m) => this.row(m)));
  }

  row(model) {
    const state = model.loaded
      ? `loaded${model.running ? `, ${model.running} running` : ""}${model.queued ? `, ${model.queued} waiting` : ""}`
      : "not loaded";
    const act = (label, run, danger) => el("button", {
      type: "button", class: danger ? "danger" : "quiet",
      "aria-label": `${label} ${model.id}`, onclick: () => this.act(run),
    }, label);
    return el("tr", { "data-model": model.id },
      el("th", { scope: "row" }, model.id),
      el("td", {}, model.selected_variant || model.quantization),
      el("td", {}, size(model.size)),
      el("td", {}, model.capabilities.join(", ")),
      el("td", {}, model.memory_required ? `needs ${model.memory_required}` : "does not fit"),
      el("td", { class: "state" }, state),
      el("td", {}, el("div", { class: "row" },
        act("Details", () => this.detail(model.id)),
        model.loaded ? act("Unload", () => this.post(model.id, "unload"))
          : act("Load", () => this.post(model.id, "load")),
        act("Delete", () => this.remove(model.id), true))));
  }

  async act(run) {
    notice("");
    try {
      await run();
    } catch (error) {
      notice(error.message);
    }
    await this.refresh();
  }

  async post(id, action) {
    await api(`/api/v1/models/${encodeURIComponent(id)}/${action}`, { method: "POST" });
  }

  async remove(id) {
    if (!window.confirm(`Delete the files of ${id}? This cannot be undone.`)) return;
    await api(`/api/v1/models/${encodeURIComponent(id)}`, { method: "DELETE" });
    $("model-detail").hidden = true;
  }

  async detail(id) {
    const model = await api(`/api/v1/models/${encodeURIComponent(id)}`);
    const plan = model.plan || {};
    const box = $("model-detail");
    box.replaceChildren(
      el("h2", {}, `${model.id}: ${model.name || ""} ${model.parameters || ""}`),
      el("p", { class: "hint" }, plan.fits
        ? `Planned: ${plan.variant}, ${plan.placement}, ctx ${plan.n_ctx}, `
          + `${plan.n_gpu_layers < 0 ? "all" : plan.n_gpu_layers} GPU layers, ${plan.n_threads} threads`
        : `Does not fit: ${plan.refusal || "no variant fits this machine"}`),
      el("ul", { class: "reasons" }, (plan.reasons || []).map((r) => el("li", {}, r))),
      el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, ["Variant", "File", "Size", "Fits", "Placement", "Needs"]
          .map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, (model.variants || []).map((v) => el("tr", {},
          el("td", {}, `${v.id}${v.selected ? " (chosen)" : ""}${v.loaded ? " (loaded)" : ""}`),
          el("td", {}, v.file), el("td", {}, size(v.size)), el("td", {}, v.fits ? "yes" : "no"),
          el("td", {}, v.placement || ""), el("td", {}, v.memory_required || "")))))));
    box.hidden = false;
  }

  async pull() {
    const bar = $("pull-progress");
    const status = $("pull-status");
    const model = $("pull-model").value.trim();
    bar.hidden = false;
    bar.value = 0;
    status.textContent = `pulling ${model}…`;
    try {
      const response = await api("/api/v1/models/pull", {
        method: "POST", body: { model, stream: true }, stream: true });
      for await (const line of ndjson(response)) {
        if (line.error) throw new Error(line.error.message);
        if (line.total) {
          bar.max = line.total;
          bar.value = line.completed || 0;
          status.textContent = `${line.status}: ${size(line.completed || 0)} of ${size(line.total)}`;
        }
        if (line.done) {
          bar.max = 1;
          bar.value = 1;
          status.textContent = `pulled ${line.model} (${line.variant}, ${size(line.size)})`;
        }
      }
    } catch (error) {
      status.textContent = `pull failed: ${error.message}`;
    }
    await this.refresh();
  }

  async import() {
    const status = $("import-status");
    try {
      const made = await api("/api/v1/models/import", {
        method: "POST", body: { path: $("import-path").value.trim() } });
      status.textContent = `imported ${made.file} as ${made.id}`;
    } catch (error) {
      status.textContent = `import failed: ${error.message}`;
    }
    await this.refresh();
  }
}
