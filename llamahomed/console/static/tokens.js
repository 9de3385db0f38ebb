// Tokens (admin): list, create with scopes / tier / expiry (shown once), revoke.
import { api, el, notice } from "./api.js";

const $ = (id) => document.getElementById(id);
const when = (stamp) => stamp ? new Date(stamp * 1000).toLocaleString() : "never";

export class Tokens {
  constructor() {
    $("token-form").addEventListener("submit", (event) => { event.preventDefault(); this.create(); });
    $("token-copy").addEventListener("click", () =>
      navigator.clipboard?.writeText($("token-value").textContent));
  }

  enter() {
    $("token-created").hidden = true;
    $("token-value").textContent = "";
    this.refresh();
  }

  leave() {
    $("token-created").hidden = true;
    $("token-value").textContent = "";  // shown once: gone when you leave the page
  }

  async refresh() {
    let tokens;
    try {
      ({ tokens } = await api("/api/v1/tokens"));
    } catch (error) {
      notice(error.status === 403 ? "Managing tokens needs a token with the admin scope."
        : `Could not list the tokens: ${error.message}`);
      return;
    }
    tokens.sort((a, b) => b.issued_at - a.issued_at);
    $("tokens-table").tBodies[0].replaceChildren(...tokens.map((t) => el("tr", { "data-token": t.id },
      el("td", { class: "mono" }, t.id.slice(0, 12)), el("td", {}, t.user),
      el("td", {}, t.scopes.join(", ")), el("td", {}, t.tier), el("td", {}, when(t.expires_at)),
      el("td", { class: "status" }, t.status),
      el("td", {}, t.status === "active" ? el("button", {
        type: "button", class: "danger", "aria-label": `Revoke the token of ${t.user}`,
        onclick: () => this.revoke(t),
      }, "Revoke") : ""))));
  }

  async create() {
    const scopes = [["token-inference", "inference"], ["token-admin", "admin"]]
      .filter(([id]) => $(id).checked).map(([, scope]) => scope);
    const days = $("token-expiry").value.trim();
    try {
      const made = await api("/api/v1/tokens", {
        method: "POST", body: {
          user: $("token-user").value.trim(), tier: $("token-tier").value.trim(), scopes,
          expires_in: days ? Number(days) * 86400 : null,
        },
      });
      $("token-value").textContent = made.token;
      $("token-created").hidden = false;
      notice("");
    } catch (error) {
      notice(`Could not create the token: ${error.message}`);
    }
    await this.refresh();
  }

  async revoke(token) {
    if (!window.confirm(`Revoke the token ${token.id.slice(0, 12)} of ${token.user}?`)) return;
    try {
      await api(`/api/v1/tokens/${token.id}`, { method: "DELETE" });
    } catch (error) {
      notice(`Could not revoke it: ${error.message}`);
    }
    await this.refresh();
  }
}
