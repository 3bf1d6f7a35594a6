// Connections (shared outgoing auth, "Test connection") and Event types (the catalog), on the
// admin API's /admin/v1/connections and /admin/v1/event-types.

import { api, get, enc } from "./api.js";
import { h, field, clear, toast, errorBox, pre } from "./dom.js";

const MASK = "********";

function missing(el, what, route) {
  el.append(h("p.empty", { text: `This gateway has no ${what} API yet (${route}).` }));
}

async function listOrMissing(el, path, what) {
  try {
    return await get(path);
  } catch (e) {
    if (e.status === 404 && /route/.test(e.message)) { missing(el, what, path); return null; }
    throw e;
  }
}

const AUTH_FIELDS = {
  api_key: [["header", false], ["value", true]],
  bearer: [["token", true]],
  basic: [["username", false], ["password", true]],
  oauth2_password: [["token_url", false], ["username", false], ["password", true], ["client_id", false], ["client_secret", true], ["scope", false]],
  oauth2_client_credentials: [["token_url", false], ["client_id", false], ["client_secret", true], ["scope", false]],
};

export async function connections(el) {
  el.append(h("div.titlebar", {}, h("h1", { text: "Connections" })));
  const list = await listOrMissing(el, "/admin/v1/connections", "connections");
  if (!list) return;
  const items = list.items || [];
  const detail = h("div");
  const edit = (c) => {
    const cur = c ? c.auth || {} : { type: "oauth2_password" };
    const name = h("input", { type: "text", value: c ? c.name : "", readonly: !!c });
    const description = h("input", { type: "text", value: c ? c.description || "" : "" });
    const type = h("select", {}, Object.keys(AUTH_FIELDS).map((t) => h("option", { value: t, text: t.replaceAll("_", " "), selected: cur.type === t })));
    const box = h("div");
    const inputs = {};
    const render = () => {
      clear(box);
      for (const [k, secret] of AUTH_FIELDS[type.value]) {
        const had = cur.type === type.value && cur[k] !== undefined;
        inputs[k] = { el: h("input", { type: secret ? "password" : "text", value: had && !secret ? cur[k] : "", placeholder: secret && had ? "unchanged (write-only)" : "" }), secret, had };
        box.append(field(k.replaceAll("_", " "), inputs[k].el));
      }
    };
    type.addEventListener("change", render);
    render();
    const out = h("div");
    const read = () => {
      const auth = { type: type.value };
      for (const [k] of AUTH_FIELDS[type.value]) {
        const i = inputs[k];
        if (i.el.value !== "") auth[k] = i.el.value;
        else if (i.secret && i.had) auth[k] = MASK;
      }
      return { name: name.value.trim(), description: description.value, auth };
    };
    clear(detail).append(h("form.card", {
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          const body = read();
          if (c) await api("PUT", `/admin/v1/connections/${enc(c.name)}`, body);
          else await api("POST", "/admin/v1/connections", body);
          toast(`Saved ${body.name}`);
          clear(el); await connections(el);
        } catch (e) { clear(out).append(errorBox(e)); }
      },
    },
      h("h2", { text: c ? `Connection ${c.name}` : "New connection" }),
      field("Name", name), field("Description", description), field("Type", type), box,
      h("div.actions", {},
        h("button", { type: "submit", class: "primary", text: "Save" }),
        c ? h("button", {
          type: "button", text: "Test connection",
          onclick: async () => {
            try {
              const r = await api("POST", `/admin/v1/connections/${enc(c.name)}/test`, {});
              clear(out).append(h("p", { text: r.ok === false ? "The token fetch failed:" : "The token fetch worked:" }), pre(r));
            } catch (e) { clear(out).append(errorBox(e)); }
          },
        }) : null,
        c ? h("button", {
          type: "button", class: "danger", text: "Delete",
          onclick: async () => {
            try { await api("DELETE", `/admin/v1/connections/${enc(c.name)}`); toast("Deleted"); clear(el); await connections(el); } catch (e) { clear(out).append(errorBox(e)); }
          },
        }) : null),
      out));
  };
  el.append(h("table.grid", { "aria-label": "Connections" },
    h("thead", {}, h("tr", {}, ["Name", "Type", "Used by"].map((t) => h("th", { text: t })))),
    h("tbody", {}, items.map((c) => h("tr", {},
      h("td", {}, h("button", { type: "button", class: "link", text: c.name, onclick: () => edit(c) })),
      h("td", { text: c.auth ? c.auth.type : "" }),
      h("td", { text: (c.webhooks || []).join(", ") }))))),
  h("button", { type: "button", text: "New connection", onclick: () => edit(null) }), detail);
}

function jsonArea(label, value) {
  const area = h("textarea", { rows: 8, "aria-label": label, text: value === undefined || value === null ? "" : JSON.stringify(value, null, 2) });
  return {
    el: field(label, area),
    read() {
      if (!area.value.trim()) return undefined;
      try { return JSON.parse(area.value); } catch (e) { throw new Error(`${label}: not JSON (${e.message})`); }
    },
  };
}

export async function eventTypes(el) {
  el.append(h("div.titlebar", {}, h("h1", { text: "Event types" })));
  const list = await listOrMissing(el, "/admin/v1/event-types", "event catalog");
  if (!list) return;
  const items = list.items || [];
  const seen = list.uncataloged || list.seen || [];
  const detail = h("div");
  const edit = (t) => {
    const name = h("input", { type: "text", value: t ? t.name : "", readonly: !!t });
    const description = h("textarea", { rows: 2, text: t ? t.description || "" : "" });
    const deprecated = h("input", { type: "checkbox", checked: !!(t && t.deprecated) });
    const schema = jsonArea("Schema of data (JSON Schema)", t && t.schema);
    const example = jsonArea("Example", t && t.example);
    const out = h("div");
    clear(detail).append(h("form.card", {
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          const body = { ...(t || {}), name: name.value.trim(), description: description.value, deprecated: deprecated.checked };
          for (const k of ["seen", "count", "created_at", "updated_at"]) delete body[k];
          const s = schema.read(), x = example.read();
          if (s !== undefined) body.schema = s; else delete body.schema;
          if (x !== undefined) body.example = x; else delete body.example;
          if (t) await api("PUT", `/admin/v1/event-types/${enc(t.name)}`, body);
          else await api("POST", "/admin/v1/event-types", body);
          toast(`Saved ${body.name}`);
          clear(el); await eventTypes(el);
        } catch (e) { clear(out).append(errorBox(e)); }
      },
    },
      h("h2", { text: t ? `Event type ${t.name}` : "New event type" }),
      field("Name", name), field("Description", description),
      h("label.check", {}, deprecated, h("span", { text: "Deprecated" })),
      schema.el, example.el,
      h("div.actions", {}, h("button", { type: "submit", class: "primary", text: "Save" }),
        t ? h("button", {
          type: "button", class: "danger", text: "Delete",
          onclick: async () => {
            try { await api("DELETE", `/admin/v1/event-types/${enc(t.name)}`); clear(el); await eventTypes(el); } catch (e) { clear(out).append(errorBox(e)); }
          },
        }) : null),
      out));
  };
  el.append(h("table.grid", { "aria-label": "Event types" },
    h("thead", {}, h("tr", {}, ["Name", "Description", ""].map((x) => h("th", { text: x })))),
    h("tbody", {}, items.map((t) => h("tr", { class: t.deprecated ? "deprecated" : "" },
      h("td", {}, h("button", { type: "button", class: "link", text: t.name, onclick: () => edit(t) })),
      h("td", { text: t.description || "" }),
      h("td", { text: t.deprecated ? "deprecated" : "" }))))),
  h("button", { type: "button", text: "New event type", onclick: () => edit(null) }), detail);
  if (seen.length) {
    el.append(h("section.card", {}, h("h2", { text: "Seen but not in the catalog" }),
      h("ul", {}, seen.map((s) => h("li", { text: typeof s === "string" ? s : `${s.name || s.type} (${s.count ?? "?"})` })))));
  }
}
