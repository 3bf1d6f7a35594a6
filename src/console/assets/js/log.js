// The Webhook Log: filters, live updates (polling), a delivery's attempts, replay.

import { api, get, query, enc } from "./api.js";
import { h, field, clear, toast, errorBox, pre, statusBadge, time } from "./dom.js";

const POLL_MS = 3000;

function localInput(ms) {
  if (!ms) return "";
  const d = new Date(ms - new Date().getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

function rfc3339(local) {
  return local ? new Date(local).toISOString() : "";
}

export async function logList(el, params = new URLSearchParams()) {
  const hooks = (await get("/admin/v1/webhooks")).items || [];
  const names = Object.fromEntries(hooks.map((w) => [w.id, w.name]));
  const f = Object.fromEntries(params.entries());

  const webhook = h("select", {}, h("option", { value: "", text: "all" }),
    hooks.map((w) => h("option", { value: w.id, text: w.name, selected: f.webhook === w.id || f.webhook === w.name })));
  const status = h("select", {}, ["", "pending", "succeeded", "dead", "skipped"].map((s) =>
    h("option", { value: s, text: s || "any", selected: (f.status || "") === s })));
  const eventType = h("input", { type: "text", value: f.event_type || "", placeholder: "user.created" });
  const source = h("select", {}, ["", "webhook", "sink", "inbound", "test"].map((s) =>
    h("option", { value: s, text: s || "any", selected: (f.source || "") === s })));
  const since = h("input", { type: "datetime-local", value: f.since ? localInput(Date.parse(f.since)) : "" });
  const until = h("input", { type: "datetime-local", value: f.until ? localInput(Date.parse(f.until)) : "" });
  const q = h("input", { type: "search", value: f.q || "", placeholder: "event id or text in the event" });
  const live = h("input", { type: "checkbox", checked: true });

  const filters = () => ({
    webhook: webhook.value, status: status.value, event_type: eventType.value.trim(), source: source.value,
    since: rfc3339(since.value), until: rfc3339(until.value), q: q.value.trim(),
  });
  const out = h("div");
  const more = h("button", { type: "button", text: "Older", hidden: true });
  const replayDead = h("button", { type: "button", text: "Replay all dead of this webhook", hidden: !webhook.value });
  let cursor = null;
  let seen = new Set();
  let tbody = null;

  const row = (d, fresh) => h(`tr${fresh ? ".fresh" : ""}`, {},
    h("td", {}, h("a", { href: `#/log/${enc(d.id)}`, text: time(d.created_at), "aria-label": `Delivery ${d.id}` })),
    h("td", { text: d.event_type }),
    h("td", { text: names[d.webhook_id] || d.webhook_id }),
    h("td", {}, statusBadge(d.status), d.source && d.source !== "webhook" ? h("small", { text: ` ${d.source}` }) : null),
    h("td.num", { text: d.attempts }),
    h("td", { text: d.last_status ?? "" }),
    h("td.err", { text: d.last_error || "" }),
    h("td", {}, h("button", { type: "button", class: "small", text: "Replay", onclick: () => replay(d.id) })));

  const load = async (append) => {
    const params = { ...filters(), limit: 50, cursor: append ? cursor : null };
    try {
      const page = await get(`/admin/v1/deliveries${query(params)}`);
      if (!append) {
        seen = new Set();
        tbody = h("tbody");
        clear(out).append(h("table.grid", { "aria-label": "Deliveries" },
          h("thead", {}, h("tr", {}, ["Time", "Event type", "Webhook", "Status", "Attempts", "Last HTTP status", "Last error", ""].map((t) => h("th", { text: t })))),
          tbody));
      }
      for (const d of page.items) { seen.add(d.id); tbody.append(row(d, false)); }
      if (!append && !page.items.length) out.append(h("p.empty", { text: "No deliveries match." }));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      const s = new URLSearchParams(Object.entries(filters()).filter(([, v]) => v)).toString();
      history.replaceState(null, "", `#/log${s ? `?${s}` : ""}`);
    } catch (e) {
      clear(out).append(errorBox(e.status === 400 && /unknown field/.test(e.message)
        ? `This gateway does not support that filter yet: ${e.message}` : e));
    }
  };

  // Live: new deliveries (and changed ones on the first page) without losing the scroll.
  const poll = async () => {
    if (!live.checked || !tbody || document.hidden) return;
    try {
      const page = await get(`/admin/v1/deliveries${query({ ...filters(), limit: 50 })}`);
      const fresh = page.items.filter((d) => !seen.has(d.id));
      for (const d of fresh.reverse()) { seen.add(d.id); tbody.prepend(row(d, true)); }
      const byId = Object.fromEntries(page.items.map((d) => [d.id, d]));
      for (const tr of tbody.children) {
        const a = tr.querySelector("a");
        const id = a && a.getAttribute("aria-label").replace("Delivery ", "");
        if (byId[id] && !fresh.includes(byId[id])) tr.replaceWith(row(byId[id], tr.classList.contains("fresh")));
      }
    } catch { /* the next poll tries again */ }
  };

  const replay = async (id) => {
    try { await api("POST", `/admin/v1/deliveries/${enc(id)}/replay`, {}); toast("Replay queued"); poll(); } catch (e) { toast(e.message, "error"); }
  };
  replayDead.addEventListener("click", async () => {
    try {
      const r = await api("POST", `/admin/v1/webhooks/${enc(webhook.value)}/replay`, {});
      toast(`${r.replayed} dead deliveries queued again`);
      load(false);
    } catch (e) { toast(e.message, "error"); }
  });
  more.addEventListener("click", () => load(true));
  webhook.addEventListener("change", () => { replayDead.hidden = !webhook.value; });

  el.append(h("div.titlebar", {}, h("h1", { text: "Webhook Log" })),
    h("form.filters.card", { role: "search", "aria-label": "Filters", onsubmit: (ev) => { ev.preventDefault(); load(false); } },
      field("Webhook", webhook), field("Status", status), field("Event type", eventType), field("Source", source),
      field("Since", since), field("Until", until), field("Search", q),
      h("div.actions", {}, h("button", { type: "submit", class: "primary", text: "Filter" }),
        h("label.check", {}, live, h("span", { text: "Live" })), replayDead)),
    out, more);
  await load(false);
  const timer = setInterval(poll, POLL_MS);
  return () => clearInterval(timer);
}

function headerText(headers) {
  return (headers || []).map(([k, v]) => `${k}: ${v}`).join("\n");
}

export async function deliveryDetail(el, id) {
  const d = await get(`/admin/v1/deliveries/${enc(id)}`);
  let hook = null;
  try { hook = await get(`/admin/v1/webhooks/${enc(d.webhook_id)}`); } catch { /* deleted */ }
  el.append(h("div.titlebar", {},
    h("h1", { text: `Delivery ${d.id}` }),
    h("a", { href: "#/log", text: "Back to the Webhook Log" })));
  const box = h("section.card", {},
    h("dl.facts", {},
      h("dt", { text: "Status" }), h("dd", {}, statusBadge(d.status)),
      h("dt", { text: "Webhook" }), h("dd", {}, hook ? h("a", { href: `#/webhooks/${enc(hook.id)}`, text: hook.name }) : d.webhook_id),
      h("dt", { text: "Event" }), h("dd", { text: `${d.event_type} (${d.event_id})` }),
      h("dt", { text: "Created" }), h("dd", { text: time(d.created_at) }),
      h("dt", { text: "Attempts" }), h("dd", { text: Array.isArray(d.attempts) ? d.attempts.length : d.attempts }),
      d.next_attempt_at ? [h("dt", { text: "Next attempt" }), h("dd", { text: time(d.next_attempt_at) })] : null),
    h("div.actions", {}, h("button", {
      type: "button", class: "primary", text: "Replay",
      onclick: async () => {
        try { await api("POST", `/admin/v1/deliveries/${enc(d.id)}/replay`, {}); toast("Replay queued"); setTimeout(() => { clear(el); deliveryDetail(el, id); }, 800); } catch (e) { toast(e.message, "error"); }
      },
    })));
  el.append(box);
  const list = Array.isArray(d.attempts) ? d.attempts : [];
  if (!list.length) el.append(h("p.empty", { text: "No attempt yet." }));
  for (const a of list) {
    const req = a.request;
    el.append(h("section.card.attempt", { "aria-label": `Attempt ${a.attempt_no}` },
      h("h2", {}, `Attempt ${a.attempt_no} `, statusBadge(a.outcome), h("small", { text: ` ${time(a.started_at)}, ${a.duration_ms} ms` })),
      a.plugin ? h("p.hint", { text: `shaped by ${a.plugin}` }) : null,
      a.error ? h("p.error", { text: a.error }) : null,
      h("div.cols", {},
        h("div", {}, h("h3", { text: "Request" }),
          req ? [h("p", {}, h("code", { text: `${req.method} ${req.url}` })), pre(headerText(req.headers)), pre(req.body || "")] : h("p.hint", { text: "nothing was sent" })),
        h("div", {}, h("h3", { text: `Response ${a.response_status ?? ""}` }),
          a.response_status ? [pre(headerText(a.response_headers)), pre(a.response_body || "")] : h("p.hint", { text: "no response" })))));
  }
}
