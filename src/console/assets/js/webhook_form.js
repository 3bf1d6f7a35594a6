// Create and edit a webhook: every field of the admin API's webhook, the mapping tables of the
// field-map plugin, the inbound side with the JIT toggle, and "Send test event".

import { api, get, optional, enc } from "./api.js";
import { h, field, clear, toast, errorBox, pre, copyButton } from "./dom.js";
import { mappingTables, schemaFields } from "./mapping.js";

const MASK = "********";
const METHODS = ["POST", "PUT", "PATCH", "DELETE", "GET"];
const READ_ONLY = ["id", "created_at", "updated_at", "inbound_url"];

// Each auth type's fields: [key, label, secret?]
const AUTH = {
  none: [],
  api_key: [["header", "Header", false], ["value", "Key", true]],
  bearer: [["token", "Token", true]],
  basic: [["username", "Username", false], ["password", "Password", true]],
  oauth2_password: [["token_url", "Token URL", false], ["username", "Username", false], ["password", "Password", true],
    ["client_id", "Client id", false], ["client_secret", "Client secret", true], ["scope", "Scope", false]],
  oauth2_client_credentials: [["token_url", "Token URL", false], ["client_id", "Client id", false],
    ["client_secret", "Client secret", true], ["scope", "Scope", false]],
};
const INBOUND_AUTH = {
  api_key: [["header", "Header", false], ["value", "Key", true]],
  bearer: [["token", "Token", true]],
  basic: [["username", "Username", false], ["password", "Password", true]],
  standard_webhooks: [["secret", "Secret (whsec_…)", true]],
};

/** A select of auth types with the fields of the chosen one; secrets are write-only. */
function authEditor(types, current, extraOptions = []) {
  const box = h("div.auth-fields");
  const kinds = [...extraOptions.map((o) => o[0]), ...Object.keys(types)];
  const initial = current && current.type ? current.type : kinds[0];
  const select = h("select", { "aria-label": "Type" },
    [...extraOptions, ...Object.keys(types).map((k) => [k, k.replaceAll("_", " ")])].map(([v, t]) =>
      h("option", { value: v, text: t, selected: v === initial })));
  const inputs = {};
  const render = () => {
    clear(box);
    const kind = select.value;
    for (const [key, label, secret] of types[kind] || []) {
      const same = current && current.type === kind;
      const had = same && current[key] !== undefined && current[key] !== null;
      const input = h("input", {
        type: secret ? "password" : "text", autocomplete: "off",
        value: had && !secret ? current[key] : "",
        placeholder: secret && had ? "unchanged (write-only)" : "",
      });
      inputs[key] = { input, secret, had };
      box.append(field(label, input));
    }
  };
  select.addEventListener("change", render);
  render();
  return {
    select, box,
    read() {
      const kind = select.value;
      if (!types[kind]) return { type: kind };
      const out = { type: kind };
      for (const [key, { input, secret, had }] of Object.entries(inputs)) {
        if (!(types[kind] || []).some((f) => f[0] === key)) continue;
        if (input.value !== "") out[key] = input.value;
        else if (secret && had) out[key] = MASK; // keeps the stored secret
      }
      return out;
    },
  };
}

/** Static headers; a "Secret" one is write-only (listed in `secret_headers`: masked when read,
 * the mask sent back keeps the stored value). */
function headerRows(headers, secretNames) {
  const secrets = new Set((secretNames || []).map((n) => n.toLowerCase()));
  const tbody = h("tbody");
  const add = (k = "", v = "") => {
    const value = h("input", { type: secrets.has(k.toLowerCase()) ? "password" : "text", autocomplete: "off", "aria-label": "Header value", value: v });
    const secret = h("input", { type: "checkbox", "aria-label": "Secret header", checked: secrets.has(k.toLowerCase()) });
    secret.addEventListener("change", () => { value.type = secret.checked ? "password" : "text"; });
    const tr = h("tr", {},
      h("td", {}, h("input", { type: "text", "aria-label": "Header name", value: k })),
      h("td", {}, value),
      h("td.center", {}, secret),
      h("td", {}, h("button", { type: "button", class: "small danger", text: "Remove", onclick: () => tr.remove() })));
    tbody.append(tr);
  };
  for (const [k, v] of Object.entries(headers || {})) add(k, v);
  const el = h("table.grid", { "aria-label": "Static headers" },
    h("thead", {}, h("tr", {}, h("th", { text: "Header" }), h("th", { text: "Value" }), h("th", { text: "Secret" }), h("th"))), tbody,
    h("tfoot", {}, h("tr", {}, h("td", { colspan: 4 }, h("button", { type: "button", class: "small", text: "Add header", onclick: () => add() })))));
  return {
    el,
    read() {
      const out = {};
      const secret = [];
      for (const tr of tbody.children) {
        const [k, v, s] = tr.querySelectorAll("input");
        if (!k.value.trim()) continue;
        out[k.value.trim()] = v.value;
        if (s.checked) secret.push(k.value.trim());
      }
      return { headers: out, secret };
    },
  };
}

export async function webhookForm(el, id) {
  const [hook, catalog, conns, plugins] = await Promise.all([
    id ? get(`/admin/v1/webhooks/${enc(id)}`) : null,
    optional("GET", "/admin/v1/event-types", { items: [] }),
    optional("GET", "/admin/v1/connections", null),
    optional("GET", "/admin/v1/plugins", { items: [] }),
  ]);
  const w = hook || { enabled: true, events: [], method: "POST", headers: {}, signing: { enabled: true }, retry: { max_attempts: 8 }, timeout_ms: 10000 };
  const types = (catalog && (catalog.items || catalog.event_types)) || [];
  const typeNames = types.map((t) => t.name).filter(Boolean);

  el.append(h("div.titlebar", {},
    h("h1", { text: hook ? `Webhook ${hook.name}` : "New webhook" }),
    h("a", { href: "#/webhooks", text: "Back to Webhooks" })));
  const status = h("div");

  // General
  const name = h("input", { type: "text", required: true, value: w.name || "", pattern: "[A-Za-z0-9._\\-]{1,100}" });
  const title = h("input", { type: "text", value: w.title || "" });
  const description = h("textarea", { rows: 2, text: w.description || "" });
  const url = h("input", { type: "url", value: w.url || "", placeholder: "the third party's endpoint" });
  const method = h("select", {}, METHODS.map((m) => h("option", { value: m, text: m, selected: (w.method || "POST") === m })));
  const enabled = h("input", { type: "checkbox", checked: w.enabled !== false });

  // Events: the catalog's types as checkboxes, anything else (globs) as text.
  const chosen = new Set(w.events || []);
  const boxes = typeNames.map((t) => {
    const cb = h("input", { type: "checkbox", value: t, checked: chosen.has(t) });
    chosen.delete(t);
    const desc = (types.find((x) => x.name === t) || {}).description;
    return h("label.check", {}, cb, h("span", { text: t }), desc ? h("small.hint", { text: ` ${desc}` }) : null);
  });
  const globs = h("input", { type: "text", value: [...chosen].join(", "), placeholder: "user.*, location.created" });
  const events = h("fieldset.events", {},
    h("legend", { text: "Events" }),
    boxes.length ? h("div.checks", {}, boxes) : h("p.hint", { text: "No event catalog yet (Event types): type the events below." }),
    field("Other events", globs, "exact types or globs, comma-separated"));

  const headers = headerRows(w.headers, w.secret_headers);
  const eventHeader = h("input", { type: "text", value: w.event_header || "", placeholder: "X-Defguard-Event" });

  // Auth: a shared connection or inline credentials.
  const connNames = conns && (conns.items || []).map((c) => c.name);
  const connSelect = h("select", { "aria-label": "Connection" },
    (connNames || []).map((n) => h("option", { value: n, text: n, selected: w.connection === n })));
  const extra = connNames && connNames.length ? [["connection", "connection"]] : [];
  const auth = authEditor(AUTH, w.connection ? { type: "connection" } : w.auth || { type: "none" }, extra);
  const connField = field("Connection", connSelect);
  const syncConn = () => { connField.hidden = auth.select.value !== "connection"; };
  auth.select.addEventListener("change", syncConn);
  syncConn();
  const authSet = h("fieldset", {}, h("legend", { text: "Authentication" }),
    field("Type", auth.select), connField, auth.box,
    connNames === null ? h("p.hint", { text: "Shared connections need a gateway with /admin/v1/connections." }) : null);

  // Signing
  const signing = h("input", { type: "checkbox", checked: !w.signing || w.signing.enabled !== false });
  const secretOut = h("code.secret");
  const reveal = hook ? h("button", {
    type: "button", class: "small", text: "Reveal signing secret",
    onclick: async () => {
      try {
        const s = await get(`/admin/v1/webhooks/${enc(hook.id)}/secret`);
        secretOut.textContent = s.secret || "(none)";
      } catch (e) { toast(e.message, "error"); }
    },
  }) : h("small.hint", { text: "A secret is generated on save." });

  // Retry
  const maxAttempts = h("input", { type: "number", min: 1, max: 100, value: (w.retry && w.retry.max_attempts) || 8 });
  const timeout = h("input", { type: "number", min: 1, value: w.timeout_ms || 10000 });
  const concurrency = h("input", { type: "number", min: 1, value: w.max_concurrency || "", placeholder: "gateway default" });

  // Plugin and mapping tables
  const pluginNames = (plugins.items || []).map((p) => p.name);
  const p = w.plugin || null;
  if (p && !pluginNames.includes(p.name)) pluginNames.push(p.name);
  const pluginSelect = h("select", {},
    h("option", { value: "", text: "none (the default body)" }),
    pluginNames.map((n) => h("option", { value: n, text: n, selected: p && p.name === n })));
  const onError = h("select", {}, ["retry", "dead_letter", "skip"].map((o) =>
    h("option", { value: o, text: o.replace("_", " "), selected: ((p && p.on_error) || "retry") === o })));
  const pin = h("input", { type: "number", min: 1, value: p && p.version ? p.version : "", placeholder: "active" });
  const fields = [...new Set(types.filter((t) => (w.events || []).some((e) => globMatch(e, t.name)) || !(w.events || []).length)
    .flatMap((t) => schemaFields(t.schema || t.data_schema)))];
  const tables = mappingTables(p && p.config, fields);
  const rawConfig = h("textarea", { rows: 6, "aria-label": "Plugin config (JSON)", text: p && p.config ? JSON.stringify(p.config, null, 2) : "" });
  const mappingBox = h("div");
  const syncPlugin = () => {
    clear(mappingBox);
    const n = pluginSelect.value;
    if (n === "field-map") mappingBox.append(tables.el);
    else if (n) mappingBox.append(field("Plugin config (JSON)", rawConfig));
  };
  pluginSelect.addEventListener("change", syncPlugin);
  syncPlugin();

  // Inbound (two-way sync): auth, entity, JIT
  const ib = w.inbound || null;
  const inboundOn = h("input", { type: "checkbox", checked: !!(ib && ib.enabled !== false) });
  const inboundAuth = authEditor(INBOUND_AUTH, ib ? ib.auth : { type: "api_key" });
  const entity = h("input", { type: "text", value: (ib && ib.entity) || "user" });
  const jit = h("input", { type: "checkbox", role: "switch", checked: !!(ib && ib.jit_provisioning) });
  const writeback = h("input", { type: "checkbox", checked: !!w.writeback });
  const inboundUrl = w.inbound_url ? h("div.copy", {}, h("code", { text: w.inbound_url }), copyButton("Copy inbound URL", () => w.inbound_url)) : null;

  const read = () => {
    const spec = { ...(hook || {}) };
    for (const k of READ_ONLY) delete spec[k];
    spec.name = name.value.trim();
    if (title.value.trim() || "title" in spec) spec.title = title.value.trim();
    spec.description = description.value;
    spec.enabled = enabled.checked;
    const evs = boxes.map((b) => b.querySelector("input")).filter((c) => c.checked).map((c) => c.value);
    for (const g of globs.value.split(",").map((s) => s.trim()).filter(Boolean)) evs.push(g);
    spec.events = evs;
    spec.url = url.value.trim();
    spec.method = method.value;
    const hs = headers.read();
    spec.headers = hs.headers;
    if (hs.secret.length || "secret_headers" in spec) spec.secret_headers = hs.secret;
    if (eventHeader.value.trim()) spec.event_header = eventHeader.value.trim(); else delete spec.event_header;
    const a = auth.read();
    if (a.type === "connection") { spec.connection = connSelect.value; delete spec.auth; }
    else { spec.auth = a; delete spec.connection; }
    spec.signing = { ...(spec.signing || {}), enabled: signing.checked };
    if (!spec.signing.secret) delete spec.signing.secret;
    spec.retry = { ...(spec.retry || {}), max_attempts: Number(maxAttempts.value) };
    spec.timeout_ms = Number(timeout.value);
    if (concurrency.value) spec.max_concurrency = Number(concurrency.value); else delete spec.max_concurrency;
    const pn = pluginSelect.value;
    if (!pn) delete spec.plugin;
    else {
      let config;
      if (pn === "field-map") config = tables.read();
      else {
        try { config = rawConfig.value.trim() ? JSON.parse(rawConfig.value) : null; } catch (e) { throw new Error(`Plugin config is not JSON: ${e.message}`); }
      }
      spec.plugin = { name: pn, version: pin.value ? Number(pin.value) : null, config, on_error: onError.value };
    }
    if (inboundOn.checked || ib) {
      spec.inbound = { ...(ib || {}), enabled: inboundOn.checked, auth: inboundAuth.read(), entity: entity.value.trim() || "record", jit_provisioning: jit.checked };
    }
    if (writeback.checked) spec.writeback = spec.writeback || {}; else delete spec.writeback;
    return spec;
  };

  const controls = { name, url, events: globs, method, title, description, headers: headers.el, secret_headers: headers.el, event_header: eventHeader, timeout_ms: timeout, retry: maxAttempts, max_concurrency: concurrency };
  const showError = (e) => {
    for (const c of el.querySelectorAll("[aria-invalid=true]")) c.setAttribute("aria-invalid", "false");
    for (const x of el.querySelectorAll(".field-error")) x.remove();
    tables.clearErrors();
    clear(status);
    if (e.status === 422 && tables.showErrors(e)) { status.append(errorBox("A mapping row is invalid: see the row marked below.")); return; }
    const top = (e.field || "").split(/[.[]/)[0];
    const c = controls[top];
    if (c) {
      c.setAttribute("aria-invalid", "true");
      c.after(h("span.field-error", { role: "alert", text: e.message }));
    }
    status.append(errorBox(e.field ? `${e.field}: ${e.message}` : e));
  };

  const save = h("button", { type: "submit", class: "primary", text: "Save" });
  const testOut = h("div.test-out");
  const form = h("form.webhook", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      let spec;
      try { spec = read(); } catch (e) { showError(e); return; }
      try {
        const saved = hook
          ? await api("PUT", `/admin/v1/webhooks/${enc(hook.id)}`, spec)
          : await api("POST", "/admin/v1/webhooks", spec);
        toast(`Saved ${saved.name}`);
        clear(status);
        if (!hook) location.hash = `#/webhooks/${enc(saved.id)}`;
        else { clear(el); await webhookForm(el, saved.id); }
      } catch (e) { showError(e); }
    },
  },
    h("section.card", {}, h("h2", { text: "General" }),
      field("Name", name, "the key: letters, digits, . _ -"), field("Title", title), field("Description", description),
      h("div.row", {}, field("URL", url), field("Method", method)),
      h("label.check", {}, enabled, h("span", { text: "Enabled" }))),
    h("section.card", {}, h("h2", { text: "Trigger events" }), events),
    h("section.card", {}, h("h2", { text: "Request" }),
      headers.el, field("Event header", eventHeader, "a header naming the event type (dots as underscores)"), authSet,
      h("fieldset", {}, h("legend", { text: "Signing" }), h("label.check", {}, signing, h("span", { text: "Sign deliveries (Standard Webhooks)" })), h("div.copy", {}, reveal, secretOut)),
      h("div.row", {}, field("Max attempts", maxAttempts), field("Timeout (ms)", timeout), field("Max concurrency", concurrency, "deliveries in flight at once"))),
    h("section.card", {}, h("h2", { text: "Mapping" }),
      h("div.row", {}, field("Plugin", pluginSelect), field("Pinned version", pin), field("On plugin error", onError)),
      mappingBox,
      h("label.check", {}, writeback, h("span", { text: "Write back mapped response fields to the internal system" }))),
    h("section.card", {}, h("h2", { text: "Inbound (two-way sync)" }),
      h("label.check", {}, inboundOn, h("span", { text: "Accept pushes from the third party" })),
      inboundUrl ? field("Inbound URL", inboundUrl) : h("p.hint", { text: "The inbound URL is shown once saved." }),
      h("fieldset", {}, h("legend", { text: "Inbound authentication" }), field("Type", inboundAuth.select), inboundAuth.box),
      field("Entity", entity),
      h("label.check", {}, jit, h("span", { text: "JIT provisioning (create records that do not exist yet)" }))),
    status,
    h("div.actions", {}, save,
      hook ? h("button", { type: "button", text: "Send test event", onclick: () => sendTest(hook, testOut) }) : null,
      hook ? h("button", {
        type: "button", class: "danger", text: "Delete webhook",
        onclick: async () => {
          if (!confirm(`Delete webhook ${hook.name}?`)) return;
          try { await api("DELETE", `/admin/v1/webhooks/${enc(hook.id)}`); toast("Deleted"); location.hash = "#/webhooks"; } catch (e) { showError(e); }
        },
      }) : null),
    testOut);
  el.append(form);
}

function globMatch(pattern, text) {
  const re = new RegExp(`^${pattern.split("*").map((s) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`);
  return re.test(text);
}

/** POST /admin/v1/webhooks/{id}/test: shows the request as sent and the response. */
async function sendTest(hook, out) {
  clear(out).append(h("p", { text: "Sending…" }));
  try {
    const r = await api("POST", `/admin/v1/webhooks/${enc(hook.id)}/test`, {});
    const attempt = r.attempt || r;
    const req = attempt.request || {};
    clear(out).append(h("section.card", { "aria-label": "Test result" },
      h("h2", { text: "Test event" }),
      h("p", { text: `${attempt.response_status ?? "no response"} in ${attempt.duration_ms ?? "?"} ms${attempt.error ? ` — ${attempt.error}` : ""}` }),
      h("h3", { text: "Request as sent" }), h("p", { text: `${req.method || ""} ${req.url || ""}` }),
      pre((req.headers || []).map(([k, v]) => `${k}: ${v}`).join("\n")), pre(req.body || ""),
      h("h3", { text: "Response" }), pre((attempt.response_headers || []).map(([k, v]) => `${k}: ${v}`).join("\n")),
      pre(attempt.response_body || "")));
  } catch (e) {
    clear(out).append(errorBox(e.status === 404 && e.code === "not_found" && /route/.test(e.message)
      ? "This gateway has no test-send API yet (POST /admin/v1/webhooks/{id}/test)." : e));
  }
}
