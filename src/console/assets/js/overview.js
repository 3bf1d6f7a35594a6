// Overview: deliveries per minute, failures, queue depth, oldest due delivery and plugin call
// time, from the figures of /metrics (GET /admin/v1/metrics), sampled every 5 s while open.

import { api } from "./api.js";
import { h, clear, errorBox } from "./dom.js";
import { sparkline, parseMetrics, sum } from "./charts.js";

const EVERY_MS = 5000;
const KEEP = 72; // 6 minutes

// Kept across visits of the page, so the charts do not start empty each time.
const samples = [];

async function sample() {
  const text = await api("GET", "/admin/v1/metrics");
  const s = parseMetrics(typeof text === "string" ? text : "");
  return {
    at: Date.now(),
    succeeded: sum(s, "hookyard_delivery_attempts_total", { outcome: "succeeded" }),
    failed: sum(s, "hookyard_delivery_attempts_total", { outcome: "retry" }) + sum(s, "hookyard_delivery_attempts_total", { outcome: "dead" }),
    dead: sum(s, "hookyard_delivery_attempts_total", { outcome: "dead" }),
    depth: sum(s, "hookyard_queue_depth"),
    due: sum(s, "hookyard_queue_due"),
    oldest: sum(s, "hookyard_queue_oldest_due_age_seconds"),
    pluginSum: sum(s, "hookyard_plugin_call_duration_seconds_sum"),
    pluginCount: sum(s, "hookyard_plugin_call_duration_seconds_count"),
    events: sum(s, "hookyard_events_accepted_total"),
    webhooks: sum(s, "hookyard_webhooks"),
  };
}

/** Per-interval figures from consecutive samples. */
function series() {
  const out = { perMin: [], failPerMin: [], depth: [], oldest: [], pluginMs: [] };
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    const mins = Math.max((b.at - a.at) / 60000, 1e-6);
    out.perMin.push(Math.max(0, b.succeeded - a.succeeded) / mins);
    out.failPerMin.push(Math.max(0, b.failed - a.failed) / mins);
    out.depth.push(b.depth);
    out.oldest.push(b.oldest);
    const calls = b.pluginCount - a.pluginCount;
    out.pluginMs.push(calls > 0 ? ((b.pluginSum - a.pluginSum) / calls) * 1000 : 0);
  }
  return out;
}

const last = (xs) => (xs.length ? xs[xs.length - 1] : 0);
const fmt = (v, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : "–");

export async function overview(el) {
  el.append(h("div.titlebar", {}, h("h1", { text: "Overview" }),
    h("small.hint", { text: "from /metrics, every 5 s while this page is open" })));
  const grid = h("div.tiles");
  const totals = h("p.hint");
  el.append(grid, totals);
  const draw = () => {
    const s = series();
    const now = samples[samples.length - 1];
    const tile = (title, value, points, label) => h("section.card.tile", { "aria-label": title },
      h("h2", { text: title }), h("p.big", { text: value }), sparkline(points, label));
    clear(grid).append(
      tile("Deliveries per minute", fmt(last(s.perMin)), s.perMin, "deliveries per minute"),
      tile("Failures per minute", fmt(last(s.failPerMin)), s.failPerMin, "failed attempts per minute"),
      tile("Queue depth", `${now.depth} pending, ${now.due} due`, s.depth, "pending deliveries"),
      tile("Oldest due delivery", `${fmt(now.oldest)} s overdue`, s.oldest, "age of the oldest due delivery"),
      tile("Plugin call time", `${fmt(last(s.pluginMs), 3)} ms`, s.pluginMs, "mean plugin call time"));
    clear(totals).append(`Since start: ${now.events} events accepted, ${now.succeeded} attempts succeeded, ${now.failed} failed (${now.dead} dead); ${now.webhooks} enabled webhooks.`);
  };
  const tick = async () => {
    try {
      samples.push(await sample());
      if (samples.length > KEEP) samples.shift();
      draw();
    } catch (e) {
      if (e.status !== 401) clear(grid).append(errorBox(e));
    }
  };
  await tick();
  const timer = setInterval(tick, EVERY_MS);
  return () => clearInterval(timer);
}
