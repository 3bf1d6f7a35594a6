// Small DOM helpers: build elements without innerHTML (no markup from data, ever).

/** h("tag.class", {attr: value, onclick: fn, text: "..."}, ...children) */
export function h(spec, props = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** A labelled control: <label><span>text</span>control</label>, the hint describing it. */
let hintIds = 0;
export function field(label, control, hint) {
  let note = null;
  if (hint) {
    note = h("small.hint", { id: `hint-${++hintIds}`, text: hint });
    control.setAttribute("aria-describedby", note.id);
  }
  // A label beside the control (not around it): a wrapped select would add its option's text
  // to the control's accessible name.
  if (!control.id) control.id = `ctl-${++hintIds}`;
  return h("div.field", {}, h("label.label", { for: control.id, text: label }), control, note);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

let toastTimer;
export function toast(message, kind = "ok") {
  const t = document.getElementById("toast");
  t.className = kind;
  t.textContent = message;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.textContent = ""; t.className = ""; }, 6000);
}

/** Formats ms since the epoch as a local date and time. */
export function time(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function bytes(n) {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

export function statusBadge(status) {
  return h(`span.badge.s-${status || "none"}`, { text: status || "none" });
}

/** An error box for an API error (or any error). */
export function errorBox(e) {
  return h("p.error", { role: "alert", text: e && e.message ? e.message : String(e) });
}

/** A <pre> of JSON or text. */
export function pre(value) {
  let text = value;
  if (typeof value !== "string") text = JSON.stringify(value, null, 2);
  else {
    try { text = JSON.stringify(JSON.parse(value), null, 2); } catch { /* not JSON */ }
  }
  return h("pre", { text });
}

/** A button that copies `text()` to the clipboard. */
export function copyButton(label, text) {
  return h("button", {
    type: "button", class: "small", text: label,
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(text());
        toast("Copied");
      } catch {
        toast("Copying needs a secure context (https or localhost); select the text instead", "error");
      }
    },
  });
}
