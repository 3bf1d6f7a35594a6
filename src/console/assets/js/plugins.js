// Plugins: the list, a plugin's versions (sha256, size, uploaded at, used by), upload by file
// picker or drag and drop, Activate (roll back or forward), and "Try it": a version run on an
// event and a config (POST .../versions/{version}/try, what `hookyard plugin check` prints).

import { api, get, enc } from "./api.js";
import { h, field, clear, toast, errorBox, bytes, time, pre } from "./dom.js";

/** `field_map.wasm` -> `field-map`. */
function nameFromFile(file) {
  return file.name.replace(/\.wasm$/, "").replaceAll("_", "-").toLowerCase();
}

function uploader(fixedName, done) {
  const name = h("input", { type: "text", value: fixedName || "", placeholder: "field-map", readonly: !!fixedName });
  const file = h("input", { type: "file", accept: ".wasm,application/wasm" });
  const status = h("div", { role: "status" });
  const upload = async (f) => {
    const n = name.value.trim() || nameFromFile(f);
    name.value = n;
    clear(status).append(h("p", { text: `Uploading ${f.name} (${bytes(f.size)}) as ${n}… it is checked and compiled before it becomes active.` }));
    try {
      const v = await api("PUT", `/admin/v1/plugins/${enc(n)}`, f);
      clear(status);
      toast(`${n} version ${v.version} uploaded and active`);
      done(n);
    } catch (e) {
      clear(status).append(errorBox(e));
    }
  };
  file.addEventListener("change", () => { if (file.files[0]) upload(file.files[0]); });
  const drop = h("div.drop", { tabindex: 0, "aria-label": "Drop a .wasm component here" },
    h("p", { text: "Drop a .wasm component here, or choose a file." }));
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    const f = ev.dataTransfer.files[0];
    if (f) upload(f);
  });
  return h("section.card", { "aria-label": "Upload" },
    h("h2", { text: fixedName ? "Upload a new version" : "Upload a plugin" }),
    h("div.row", {}, field("Plugin name", name, "empty: from the file name"), field("Upload plugin", file)),
    drop, status);
}

export async function pluginList(el) {
  const [plugins, hooks] = await Promise.all([get("/admin/v1/plugins"), get("/admin/v1/webhooks")]);
  el.append(h("div.titlebar", {}, h("h1", { text: "Plugins" })));
  const items = plugins.items || [];
  if (!items.length) el.append(h("p.empty", { text: "No plugin uploaded yet." }));
  else {
    el.append(h("table.grid", { "aria-label": "Plugins" },
      h("thead", {}, h("tr", {}, ["Name", "Active version", "Versions", "Used by"].map((t) => h("th", { text: t })))),
      h("tbody", {}, items.map((p) => h("tr", {},
        h("td", {}, h("a", { href: `#/plugins/${enc(p.name)}`, text: p.name })),
        h("td.num", { text: p.active ?? "none" }),
        h("td.num", { text: p.versions.length }),
        h("td", { text: (hooks.items || []).filter((w) => w.plugin && w.plugin.name === p.name).map((w) => w.name).join(", ") }))))));
  }
  el.append(uploader(null, (n) => { location.hash = `#/plugins/${enc(n)}`; }));
}

export async function pluginDetail(el, name) {
  const [p, hooks] = await Promise.all([get(`/admin/v1/plugins/${enc(name)}`), get("/admin/v1/webhooks")]);
  const users = (v) => (hooks.items || []).filter((w) => w.plugin && w.plugin.name === name &&
    (w.plugin.version ? w.plugin.version === v : p.active === v)).map((w) => w.name);
  el.append(h("div.titlebar", {}, h("h1", { text: `Plugin ${name}` }), h("a", { href: "#/plugins", text: "Back to Plugins" })));
  const rows = [...p.versions].reverse().map((v) => h("tr", { class: v.version === p.active ? "active" : "" },
    h("td.num", { text: v.version }),
    h("td", {}, v.version === p.active ? h("span.badge.s-succeeded", { text: "active" }) : null),
    h("td", {}, h("code.hash", { text: v.sha256, title: v.sha256 })),
    h("td.num", { text: bytes(v.size) }),
    h("td", { text: time(v.created_at) }),
    h("td", { text: users(v.version).join(", ") }),
    h("td", {}, v.version === p.active ? null : h("button", {
      type: "button", class: "small", text: "Activate", "aria-label": `Activate version ${v.version}`,
      onclick: async () => {
        try {
          await api("POST", `/admin/v1/plugins/${enc(name)}/activate`, { version: v.version });
          toast(`${name} version ${v.version} is active`);
          clear(el); await pluginDetail(el, name);
        } catch (e) { toast(e.message, "error"); }
      },
    }))));
  el.append(h("table.grid", { "aria-label": "Versions" },
    h("thead", {}, h("tr", {}, ["Version", "", "sha256", "Size", "Uploaded at", "Used by", ""].map((t) => h("th", { text: t })))),
    h("tbody", {}, rows)));
  el.append(uploader(name, async () => { clear(el); await pluginDetail(el, name); }));
  el.append(tryPanel(name, p, hooks.items || []));
}

/** The sample event of `hookyard plugin check` (and of the API when no event is given). */
const SAMPLE_EVENT = {
  type: "user.created",
  data: { id: "42", username: "jdoe", email: "jdoe@example.com", first_name: "Jane", last_name: "Doe" },
};

function ms(x) { return `${Number(x).toFixed(x < 10 ? 2 : 1)} ms`; }

/** The "Try it" panel: version, webhook, event and config in; output, time and memory out. */
function tryPanel(name, p, hooks) {
  const version = h("select", {}, [...p.versions].reverse().map((v) => h("option", {
    value: v.version, text: v.version === p.active ? `${v.version} (active)` : String(v.version), selected: v.version === p.active,
  })));
  const webhook = h("select", {}, h("option", { value: "", text: "none (a sample webhook)" }),
    hooks.map((w) => h("option", { value: w.id, text: w.name })));
  const event = h("textarea", { rows: 9, spellcheck: "false", text: JSON.stringify(SAMPLE_EVENT, null, 2) });
  const config = h("textarea", { rows: 9, spellcheck: "false", placeholder: "empty: the webhook's config, else null" });
  // Picking a webhook that uses this plugin shows its config, to edit before running.
  webhook.addEventListener("change", () => {
    const w = hooks.find((x) => x.id === webhook.value);
    if (w && w.plugin && w.plugin.name === name) config.value = JSON.stringify(w.plugin.config ?? null, null, 2);
  });
  const out = h("div", { "aria-live": "polite" });
  const parse = (label, area) => {
    if (!area.value.trim()) return undefined;
    try { return JSON.parse(area.value); } catch (e) { throw new Error(`${label} is not JSON: ${e.message}`); }
  };
  const form = h("form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      const body = {};
      try {
        const e = parse("Event", event), c = parse("Config", config);
        if (e !== undefined) body.event = e;
        if (c !== undefined) body.config = c;
      } catch (e) { clear(out).append(errorBox(e)); return; }
      if (webhook.value) body.webhook = webhook.value;
      clear(out).append(h("p", { text: `Running version ${version.value}…` }));
      try {
        const r = await api("POST", `/admin/v1/plugins/${enc(name)}/versions/${enc(version.value)}/try`, body);
        clear(out).append(tryResult(r));
      } catch (e) {
        // A plugin that failed answers 422 with what the call produced besides the error.
        clear(out).append(e.body && e.body.plugin ? tryResult(e.body) : errorBox(e.field ? `${e.field}: ${e.message}` : e));
      }
    },
  },
    h("div.row", {}, field("Version", version), field("Webhook", webhook, "the plugin is told it runs for it; its requests are checked as a delivery's")),
    h("div.cols", {}, h("div", {}, field("Event", event, "as posted to /v1/events")), h("div", {}, field("Config", config, "the plugin's config (JSON)"))),
    h("div.actions", {}, h("button", { type: "submit", class: "primary", text: "Run" })));
  return h("section.card", { "aria-label": "Try it" }, h("h2", { text: "Try it" }),
    h("p.hint", { text: "Runs validate-config, then the outgoing phase, on a fresh instance under the configured limits. Nothing is stored or sent." }),
    form, out);
}

/** What a try answered (200, or a 422 with `error`). */
function tryResult(r) {
  const outcome = r.error ? "failed" : r.outcome === "skip" ? "skip" : `send ${r.requests.length} request(s)`;
  const box = h("section", { "aria-label": "Try it output" },
    h("dl.facts", {},
      h("dt", { text: "Outcome" }), h("dd", { text: outcome }),
      h("dt", { text: "Time" }), h("dd", { text: `${ms(r.time_ms)} (instantiation included)` }),
      h("dt", { text: "Memory" }), h("dd", { text: `${bytes(r.memory_bytes)} peak` }),
      h("dt", { text: "Version" }), h("dd", {}, `${r.version} `, h("code.hash", { text: r.sha256, title: r.sha256 })),
      h("dt", { text: "Webhook" }), h("dd", { text: `${r.webhook.name} (${r.webhook.method} ${r.webhook.url})` })));
  if (r.error) box.append(errorBox(`${r.error.code}: ${r.error.message}`));
  if (r.outcome === "skip") box.append(h("p", { text: `Skipped: ${r.skip_reason}` }));
  r.requests.forEach((q, i) => {
    const target = `${q.method || `${r.webhook.method} (the webhook's)`} ${r.webhook.url}${q.path || ""}${q.query ? `?${q.query}` : ""}`;
    const head = [`content-type: ${q.content_type || "application/json"}`, ...q.headers.map(([k, v]) => `${k}: ${v}`)];
    box.append(h("h3", { text: `Request ${i + 1}` }), h("p", {}, h("code", { text: target })),
      q.refused ? errorBox(`The gateway would refuse it: ${q.refused}`) : "",
      pre(head.join("\n")),
      h("p.sub", { text: `Body (${bytes(q.body_bytes)})` }),
      pre(q.body !== null && q.body !== undefined ? q.body : `base64: ${q.body_base64}`));
  });
  if (r.logs.length) box.append(h("h3", { text: "Log" }), pre(r.logs.map((l) => `${l.level}: ${l.message}`).join("\n")));
  if (r.guest_output) box.append(h("h3", { text: "Guest output" }), pre(r.guest_output));
  return box;
}
