// Playground: chat (or raw completion for base models) streamed over the WebSocket.
import { api, el, notice } from "./api.js";

const $ = (id) => document.getElementById(id);

export class Playground {
  constructor() {
    this.models = [];
    this.history = [];       // the conversation so far (chat models)
    this.socket = null;
    this.active = null;      // the reply being written
    this.counter = 0;
    $("pg-form").addEventListener("submit", (event) => { event.preventDefault(); this.send(); });
    $("pg-prompt").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      }
    });
    $("pg-stop").addEventListener("click", () => this.stop());
    $("pg-clear").addEventListener("click", () => this.clear());
    $("pg-model").addEventListener("change", () => this.describeModel());
  }

  async enter() {
    if (this.models.length) return;
    try {
      const { models } = await api("/api/v1/models");
      const chat = (m) => m.capabilities.includes("chat");
      this.models = [...models.filter(chat), ...models.filter((m) => !chat(m))];
      const select = $("pg-model");
      select.replaceChildren(...this.models.map((m) =>
        el("option", { value: m.id }, `${m.id}${chat(m) ? "" : " (base model)"}`)));
      this.describeModel();
    } catch (error) {
      notice(`Could not list the models: ${error.message}`);
    }
  }

  model() { return this.models.find((m) => m.id === $("pg-model").value); }

  describeModel() {
    const model = this.model();
    if (!model) return;
    $("pg-kind").textContent = model.capabilities.includes("chat")
      ? "Chats through its own chat template; the conversation is kept."
      : "A base model: each message is completed as text, without history.";
    this.clear();
  }

  clear() {
    this.history = [];
    $("pg-transcript").replaceChildren();
  }

  async connect() {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) return this.socket;
    const { ticket } = await api("/api/v1/ws/ticket", { method: "POST" });
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(
      `${scheme}://${location.host}/api/v1/ws?ticket=${encodeURIComponent(ticket)}`);
    await new Promise((resolve, reject) => {
      socket.addEventListener("open", resolve, { once: true });
      socket.addEventListener("error", () => reject(new Error("the WebSocket did not open")),
        { once: true });
    });
    socket.addEventListener("message", (event) => this.onMessage(JSON.parse(event.data)));
    socket.addEventListener("close", (event) => {
      this.socket = null;
      if (this.active) this.finish(`the connection closed (${event.code} ${event.reason})`);
      if (event.code === 1008) window.dispatchEvent(new Event("llamahome:unauthorized"));
    });
    this.socket = socket;
    return socket;
  }

  request(prompt) {
    const model = this.model();
    const number = (id) => Number($(id).value);
    const body = {
      id: `r${++this.counter}`, model: model.id, max_tokens: number("pg-max-tokens"),
      temperature: number("pg-temperature"), top_p: number("pg-top-p"),
    };
    const system = $("pg-system").value.trim();
    if (system) body.system = system;
    const schema = $("pg-schema").value.trim();
    if (schema) body.format = JSON.parse(schema);  // a SyntaxError is shown to the user
    if (model.capabilities.includes("chat")) {
      body.messages = [...this.history, { role: "user", content: prompt }];
    } else {
      body.prompt = prompt;
    }
    return body;
  }

  async send() {
    const input = $("pg-prompt");
    const prompt = input.value.trim();
    if (!prompt || this.active || !this.model()) return;
    let body;
    try {
      body = this.request(prompt);
    } catch (error) {
      notice(`The JSON Schema is not valid JSON: ${error.message}`);
      return;
    }
    notice("");
    input.value = "";
    const text = el("p", { class: "text" });
    const stats = el("div", { class: "stats" }, "waiting…");
    const transcript = $("pg-transcript");
    transcript.append(el("li", { class: "user" }, el("p", { class: "text" }, prompt)),
      el("li", { class: "assistant", "data-id": body.id }, text, stats));
    this.active = { id: body.id, prompt, text, stats, reply: "", started: performance.now(),
      first: 0, chat: "messages" in body };
    $("pg-stop").disabled = false;
    $("pg-send").disabled = true;
    try {
      (await this.connect()).send(JSON.stringify(body));
    } catch (error) {
      this.finish(error.message);
    }
  }

  stop() {
    if (this.active && this.socket) this.socket.send(JSON.stringify({ cancel: this.active.id }));
  }

  onMessage(message) {
    const reply = this.active;
    if (!reply || message.id !== reply.id) return;
    if ("chunk" in message) {
      if (!reply.first) reply.first = performance.now();
      reply.reply += message.chunk;
      reply.text.textContent = reply.reply;
      reply.stats.textContent = "writing…";
      reply.text.scrollIntoView({ block: "nearest" });
    } else if (message.done) {
      const end = performance.now();
      const usage = message.usage || {};
      const tokens = usage.completion_tokens || 0;
      const ttft = reply.first ? Math.round(reply.first - reply.started) : null;
      const seconds = reply.first ? (end - reply.first) / 1000 : 0;
      const rate = tokens > 1 && seconds > 0 ? ((tokens - 1) / seconds).toFixed(1) : "–";
      const cache = message.cache && message.cache.hit_tokens
        ? `cache hit ${message.cache.hit_tokens} tokens (${message.cache.source})` : "no cache hit";
      reply.stats.textContent = `${tokens} tokens · TTFT ${ttft ?? "–"} ms · ${rate} tok/s · `
        + `${cache} · ${message.finish_reason}`;
      if (reply.chat && message.finish_reason !== "cancelled") {
        this.history.push({ role: "user", content: reply.prompt },
          { role: "assistant", content: reply.reply });
      }
      this.finish();
    } else if (message.error) {
      this.finish(message.error.message);
    }
  }

  finish(error) {
    if (error && this.active) {
      this.active.stats.replaceChildren(el("span", { class: "error" }, error));
    }
    this.active = null;
    $("pg-stop").disabled = true;
    $("pg-send").disabled = false;
  }

  leave() {}
}
