// Plugins: the list, a plugin's versions (sha256, size, uploaded at, used by), upload by file
// picker or drag and drop, Activate (roll back or forward).

import { api, get, enc } from "./api.js";
import { h, field, clear, toast, errorBox, bytes, time } from "./dom.js";

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
  el.append(h("section.card", { "aria-label": "Try it" }, h("h2", { text: "Try it" }),
    h("p", { text: "Running a version on a sample event from the console needs an admin API this gateway does not have yet. Meanwhile, on the command line:" }),
    h("pre", { text: `hookyard plugin check ${name.replaceAll("-", "_")}.wasm --event event.json --config config.json --pretty` })));
}
