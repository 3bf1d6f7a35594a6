// Webhooks: the list, with the last delivery's status and the success rate of the last hour.

import { get, query, enc } from "./api.js";
import { h, statusBadge, time } from "./dom.js";

const HOUR = 3600 * 1000;

/**
 * The last delivery and the success rate of the last hour of one webhook, from the Webhook Log
 * (newest first): succeeded / (succeeded + dead) among deliveries made in the last hour.
 * Reads at most 5 pages of 200.
 */
export async function webhookStats(id) {
  const since = Date.now() - HOUR;
  let cursor = null, last = null, ok = 0, failed = 0, pending = 0;
  for (let page = 0; page < 5; page++) {
    const r = await get(`/admin/v1/deliveries${query({ webhook: id, limit: 200, cursor })}`);
    const items = r.items || [];
    if (!last && items.length) last = items[0];
    let older = false;
    for (const d of items) {
      if (d.created_at < since) { older = true; break; }
      if (d.status === "succeeded") ok++;
      else if (d.status === "dead") failed++;
      else if (d.status === "pending") pending++;
    }
    if (older || !r.next_cursor) break;
    cursor = r.next_cursor;
  }
  const done = ok + failed;
  return { last, rate: done ? ok / done : null, done, pending };
}

export async function webhookList(el) {
  const list = await get("/admin/v1/webhooks");
  const hooks = list.items || [];
  el.append(h("div.titlebar", {},
    h("h1", { text: "Webhooks" }),
    h("a.button.primary", { href: "#/webhooks/new", text: "New webhook" })));
  if (!hooks.length) {
    el.append(h("p.empty", { text: "No webhooks yet. Create one with New webhook." }));
    return;
  }
  const rows = hooks.map((w) => {
    const lastCell = h("td", { text: "…" });
    const rateCell = h("td.num", { text: "…" });
    webhookStats(w.id).then((s) => {
      lastCell.textContent = "";
      if (s.last) lastCell.append(statusBadge(s.last.status), " ", h("small", { text: time(s.last.created_at) }));
      else lastCell.textContent = "none yet";
      rateCell.textContent = s.rate === null ? "–" : `${Math.round(s.rate * 100)}% of ${s.done}`;
    }).catch(() => { lastCell.textContent = "?"; rateCell.textContent = "?"; });
    return h("tr", {},
      h("td", {}, h("a", { href: `#/webhooks/${enc(w.id)}`, text: w.name }),
        w.title ? h("div.sub", { text: w.title }) : null),
      h("td", {}, h("span", { class: w.enabled ? "badge s-succeeded" : "badge s-none", text: w.enabled ? "enabled" : "disabled" })),
      h("td", { text: (w.events || []).join(", ") }),
      h("td", { text: w.url || "" }),
      lastCell, rateCell,
      h("td", {}, h("a", { href: `#/log?webhook=${enc(w.id)}`, text: "Log", "aria-label": `Log of ${w.name}` })));
  });
  el.append(h("table.grid", { "aria-label": "Webhooks" },
    h("thead", {}, h("tr", {}, ["Name", "State", "Events", "URL", "Last delivery", "Success (last hour)", ""].map((t) => h("th", { text: t })))),
    h("tbody", {}, rows)));
}
