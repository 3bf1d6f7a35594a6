// Small charts as inline SVG (no library): a sparkline of the last points of a series.

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

/** A sparkline of `points` (numbers), `label` as its accessible name. */
export function sparkline(points, label, { width = 260, height = 60 } = {}) {
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label, class: "spark" });
  const title = svg("title", {});
  title.textContent = label;
  root.append(title);
  const max = Math.max(1e-9, ...points);
  const n = Math.max(points.length, 2);
  const x = (i) => (i / (n - 1)) * (width - 2) + 1;
  const y = (v) => height - 2 - (v / max) * (height - 6);
  root.append(svg("line", { x1: 0, y1: height - 1, x2: width, y2: height - 1, class: "axis" }));
  if (points.length > 1) {
    const d = points.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    root.append(svg("path", { d: `${d} L${x(points.length - 1).toFixed(1)},${height - 1} L${x(0)},${height - 1} Z`, class: "area" }));
    root.append(svg("path", { d, class: "line" }));
  }
  return root;
}

/** Parses the Prometheus/OpenMetrics text format: [{name, labels, value}]. */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

/** The sum of every sample named `name` whose labels match `where`. */
export function sum(samples, name, where = {}) {
  return samples.filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}
