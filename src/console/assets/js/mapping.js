// The field-map plugin's mapping tables, as the seed systems' admin screens show them: request,
// response and input parameters, one row per field, "Add row" and "Remove", the "User
// identifier" checkbox on input rows. A 422 naming a row (`request[1]`) is shown on that row.

import { h, clear } from "./dom.js";

export const CONVERSIONS = ["", "upper", "lower", "trim", "string", "number", "integer", "boolean",
  "upper_snake", "date:rfc3339", "date:date", "date:unix", "date:unix_ms"];

const ENVELOPE = ["@type", "@id", "@timestamp", "@data", "@context", "@webhook.id", "@webhook.name",
  "@webhook.url", "@webhook.method"];

const TABLES = [
  ["request", "Request parameters", "What is sent: each API field of the body is read from an internal field of the event (or =constant)."],
  ["response", "Response parameters", "What is written back: each API field of the third party's answer goes to an internal field."],
  ["input", "Input parameters", "What a push from the third party updates: each API field goes to an internal field; tick the fields that identify the record."],
];

/** Dotted paths of a JSON Schema's properties (`name`, `name.first`, ...). */
export function schemaFields(schema, prefix = "", out = [], depth = 0) {
  if (!schema || typeof schema !== "object" || depth > 6) return out;
  for (const [k, sub] of Object.entries(schema.properties || {})) {
    const path = prefix ? `${prefix}.${k}` : k;
    out.push(path);
    schemaFields(sub, path, out, depth + 1);
  }
  return out;
}

function parseDefault(text) {
  if (text === "") return undefined;
  try { return JSON.parse(text); } catch { return text; }
}

function showDefault(v) {
  if (v === undefined) return "";
  return typeof v === "string" ? v : JSON.stringify(v);
}

let listIds = 0;

/**
 * Builds the three tables for a field-map config. `fields`: internal field names offered in
 * the drop-down (free text is allowed too). Returns {el, read(), showErrors(error), clearErrors()}.
 */
export function mappingTables(config, fields) {
  const cfg = config && typeof config === "object" ? config : {};
  const el = h("div.mapping");
  const tables = {};
  const listId = `internal-fields-${++listIds}`;
  const datalist = h("datalist", { id: listId }, fields.map((f) => h("option", { value: f })));
  const requestList = h("datalist", { id: `${listId}-req` }, [...fields, ...ENVELOPE].map((f) => h("option", { value: f })));
  el.append(datalist, requestList);

  for (const [name, title, hint] of TABLES) {
    const tbody = h("tbody");
    const identifier = name === "input";
    const addRow = (row = {}) => tbody.append(rowEl(row, identifier, name === "request" ? `${listId}-req` : listId, name));
    for (const row of Array.isArray(cfg[name]) ? cfg[name] : []) addRow(row);
    const table = h("table.grid.mapping", { "aria-label": title },
      h("caption", {}, h("span", { text: title }), h("small.hint", { text: hint })),
      h("thead", {}, h("tr", {},
        h("th", { text: "API field" }), h("th", { text: "Internal field" }),
        h("th", { text: "Conversion" }), h("th", { text: "Default" }), h("th", { text: "Required" }),
        identifier ? h("th", { text: "User identifier" }) : null, h("th", {}, h("span.sr", { text: "Actions" })))),
      tbody,
      h("tfoot", {}, h("tr", {}, h("td", { colspan: identifier ? 7 : 6 },
        h("button", { type: "button", class: "small", text: "Add row", onclick: () => { addRow(); tbody.lastChild.querySelector("input").focus(); } })))));
    tables[name] = tbody;
    el.append(table);
  }

  return {
    el,
    /** The config with the tables as edited; other keys (method, skip_events) kept. */
    read() {
      const out = { ...cfg };
      for (const [name] of TABLES) {
        const rows = [...tables[name].children].map((tr) => tr.read());
        if (rows.length) out[name] = rows; else delete out[name];
      }
      return out;
    },
    hasRows(name) { return tables[name].children.length > 0; },
    clearErrors() {
      for (const tbody of Object.values(tables)) for (const tr of tbody.children) tr.setError(null);
    },
    /** Puts an API error on the rows it names; true if it named one. */
    showErrors(error) {
      const text = `${error.field || ""} ${error.message || ""}`;
      let named = false;
      for (const m of text.matchAll(/(request|response|input)\[(\d+)\]/g)) {
        const tr = tables[m[1]] && tables[m[1]].children[Number(m[2])];
        if (tr) {
          const own = error.message.split(/;\s*|\n/).filter((p) => p.includes(`${m[1]}[${m[2]}]`));
          tr.setError(own.length ? own.join("; ") : error.message);
          named = true;
        }
      }
      return named;
    },
  };
}

function rowEl(row, identifier, listId, table) {
  const api = h("input", { type: "text", "aria-label": "API field", value: row.api_field || "" });
  const internal = h("input", {
    type: "text", "aria-label": "Internal field", list: listId, role: "combobox",
    value: "value" in row && !("field" in row) ? `=${JSON.stringify(row.value)}` : (row.field || ""),
    placeholder: table === "request" ? "field, @type or =constant" : "field",
  });
  const convert = h("select", { "aria-label": "Conversion" },
    CONVERSIONS.map((c) => h("option", { value: c, text: c || "none", selected: (row.convert || "") === c })));
  const dflt = h("input", { type: "text", "aria-label": "Default", value: showDefault(row.default), placeholder: "none" });
  const required = h("input", { type: "checkbox", "aria-label": "Required", checked: !!row.required });
  const ident = identifier ? h("input", { type: "checkbox", "aria-label": "User identifier", checked: !!row.identifier }) : null;
  const error = h("div.row-error", { role: "alert" });
  const tr = h("tr", {},
    h("td", {}, api, error), h("td", {}, internal), h("td", {}, convert), h("td", {}, dflt),
    h("td.center", {}, required), ident ? h("td.center", {}, ident) : null,
    h("td", {}, h("button", { type: "button", class: "small danger", text: "Remove", onclick: () => tr.remove() })));
  tr.read = () => {
    const out = { ...row };
    for (const k of ["field", "value", "convert", "default", "required", "identifier"]) delete out[k];
    out.api_field = api.value.trim();
    const target = internal.value.trim();
    if (target.startsWith("=")) out.value = parseDefault(target.slice(1));
    else out.field = target;
    if (convert.value) out.convert = convert.value;
    const d = parseDefault(dflt.value);
    if (d !== undefined) out.default = d;
    if (required.checked) out.required = true;
    if (ident && ident.checked) out.identifier = true;
    return out;
  };
  tr.setError = (message) => {
    clear(error);
    tr.classList.toggle("invalid", !!message);
    api.setAttribute("aria-invalid", message ? "true" : "false");
    if (message) error.textContent = message;
  };
  return tr;
}
