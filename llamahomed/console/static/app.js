// The console's entry point: log in (ticket in the URL fragment, or a pasted token), then pages.
import { api, session, notice, ApiError } from "./api.js";
import { Playground } from "./playground.js";
import { Models } from "./models.js";
import { Live } from "./live.js";
import { Tokens } from "./tokens.js";

const pages = {};
let current = null;

function show(name) {
  for (const button of document.querySelectorAll("nav button[data-page]")) {
    if (button.dataset.page === name) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.id !== `page-${name}`;
  }
  if (current && current !== pages[name]) current.leave?.();
  current = pages[name];
  notice("");
  current.enter?.();
}

function loggedOut(message) {
  session.token = null;
  current?.leave?.();
  current = null;
  document.getElementById("nav").hidden = true;
  for (const section of document.querySelectorAll("main > section")) section.hidden = true;
  document.getElementById("login").hidden = false;
  notice(message || "");
  document.getElementById("login-token").focus();
}

async function start() {
  try {
    await api("/api/v1/models");  // does the token work?
  } catch (error) {
    loggedOut(error instanceof ApiError && error.status === 401
      ? "That token was not accepted (expired, revoked or mistyped)." : String(error.message || error));
    return;
  }
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  show("playground");
}

async function redeemTicket() {
  const match = /(?:^#|&)ticket=([^&]+)/.exec(location.hash);
  if (!match) return;
  history.replaceState(null, "", location.pathname);  // the ticket leaves the address bar
  try {
    const answer = await api("/api/v1/console/login", {
      method: "POST", body: { ticket: decodeURIComponent(match[1]) } });
    session.token = answer.token;
  } catch (error) {
    notice(`Could not log in with that link: ${error.message}`);
  }
}

function wire() {
  pages.playground = new Playground();
  pages.models = new Models();
  pages.live = new Live();
  pages.tokens = new Tokens();
  for (const button of document.querySelectorAll("nav button[data-page]")) {
    button.addEventListener("click", () => show(button.dataset.page));
  }
  document.getElementById("logout").addEventListener("click", () => loggedOut("Logged out."));
  document.getElementById("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("login-token");
    session.token = input.value.trim();
    input.value = "";
    start();
  });
  window.addEventListener("llamahome:unauthorized", () =>
    loggedOut("The session token is no longer valid; log in again."));
}

async function main() {
  wire();
  await redeemTicket();
  if (session.token) await start();
  else loggedOut(document.getElementById("notice").textContent);
}

main();
