// The console's shell: sign-in, navigation, and the router from `#/...` to a screen.

import { api, setCsrf, whenSignedOut } from "./api.js";
import { h, clear, field, errorBox } from "./dom.js";
import { overview } from "./overview.js";
import { webhookList } from "./webhooks.js";
import { webhookForm } from "./webhook_form.js";
import { logList, deliveryDetail } from "./log.js";
import { pluginList, pluginDetail } from "./plugins.js";
import { connections, eventTypes } from "./catalog.js";

const main = () => document.getElementById("main");
let signedIn = false;
let leaving = () => {};

const routes = [
  [/^#\/overview$/, overview],
  [/^#\/webhooks$/, webhookList],
  [/^#\/webhooks\/new$/, (el) => webhookForm(el, null)],
  [/^#\/webhooks\/([^/]+)$/, (el, id) => webhookForm(el, id)],
  [/^#\/log$/, logList],
  [/^#\/log\/([^/]+)$/, deliveryDetail],
  [/^#\/plugins$/, pluginList],
  [/^#\/plugins\/([^/]+)$/, pluginDetail],
  [/^#\/connections$/, connections],
  [/^#\/event-types$/, eventTypes],
];

function showSignIn(message) {
  signedIn = false;
  setCsrf(null);
  leaving();
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  const token = h("input", { type: "password", name: "token", autocomplete: "current-password", required: true });
  const status = h("div");
  if (message) status.append(errorBox(message));
  const form = h("form.card.signin", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      clear(status);
      try {
        const s = await api("POST", "/console/session", { token: token.value });
        token.value = "";
        start(s);
      } catch (e) {
        status.append(errorBox(e.status === 401 ? "Wrong admin token." : e));
        token.focus();
      }
    },
  },
    h("h1", { text: "Sign in to hookyard" }),
    field("Admin token", token, "server.admin_token of the gateway's config"),
    h("button", { type: "submit", class: "primary", text: "Sign in" }),
    status);
  clear(main()).append(form);
  token.focus();
}

function start(session) {
  signedIn = true;
  setCsrf(session.csrf_token);
  document.getElementById("nav").hidden = false;
  document.getElementById("sign-out").hidden = false;
  if (!location.hash || location.hash === "#/") location.hash = "#/overview";
  else route();
}

async function route() {
  if (!signedIn) return;
  leaving();
  leaving = () => {};
  const [hash, qs] = (location.hash || "#/overview").split("?");
  for (const a of document.querySelectorAll("#nav a")) {
    const current = hash === a.getAttribute("href") || hash.startsWith(a.getAttribute("href") + "/");
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const el = clear(main());
  for (const [re, screen] of routes) {
    const m = hash.match(re);
    if (m) {
      try {
        // A screen may return a function that stops its timers when the screen is left.
        const stop = await screen(el, ...m.slice(1).map(decodeURIComponent), new URLSearchParams(qs || ""));
        if (typeof stop === "function") leaving = stop;
      } catch (e) {
        if (e.status !== 401) el.append(errorBox(e));
      }
      return;
    }
  }
  el.append(h("p", { text: "No such page." }));
}

window.addEventListener("hashchange", route);
whenSignedOut(() => showSignIn("Your session ended; sign in again."));

document.getElementById("sign-out").addEventListener("click", async () => {
  try { await api("DELETE", "/console/session"); } catch { /* signed out anyway */ }
  showSignIn();
});

(async () => {
  try {
    start(await api("GET", "/console/session"));
  } catch {
    showSignIn();
  }
})();
