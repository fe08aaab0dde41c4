"use strict";
// The vorchd dashboard. It reads and acts through the seed API only, as any client does
// (plus /metrics, for whether each PM is up or drained), and puts every value on the page
// as text, never as HTML: VM names are free text and show exactly as given.
//
// Query parameters: ?refresh=N refreshes every N seconds (5 by default).

const ROOT = new URL("..", document.location.href);
const INTERVAL = Math.min(
  3600,
  Math.max(1, Number(new URLSearchParams(location.search).get("refresh")) || 5),
);
const PARALLEL = 8; // requests in flight at once while loading
const ARMED_FOR = 5000; // ms a destroy button waits for its confirming click
const SETTLE = 400; // ms before it takes one (the second click of a double-click is not)

const state = {
  types: [], // [{tid, cpu, ram, disk}]
  images: [], // [{id, name}]
  // [{pmid, info (pm/query's answer or null), vmids (null if not listed), used}]
  pms: [],
  vms: new Map(), // vmid -> vm/query's answer; a VM's record never changes
  health: new Map(), // pmid -> "up" | "down" | "drained"
  armed: new Map(), // vmid -> {timer, at} of a destroy button waiting to be confirmed
  busy: new Set(), // vmids being destroyed
  rendered: "",
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

class ApiError extends Error {}

// GET one call of the API; its JSON answer and the reason header of a failure.
async function call(path, args) {
  const url = new URL(path, ROOT);
  for (const [key, value] of Object.entries(args || {})) url.searchParams.set(key, value);
  let response;
  try {
    response = await fetch(url, { cache: "no-store" });
  } catch (e) {
    throw new ApiError(`the daemon does not answer (${e.message})`);
  }
  if (!response.ok) throw new ApiError(`${path}: HTTP ${response.status}`);
  const body = await response.text();
  let value;
  try {
    value = JSON.parse(body);
  } catch (e) {
    throw new ApiError(`${path}: not JSON`);
  }
  return { value, reason: response.headers.get("x-vorchd-reason") || "" };
}

// A call whose failure value is 0 (or {key: 0}); its answer, or an ApiError with the reason.
async function must(path, key, args) {
  const { value, reason } = await call(path, args);
  if (value === 0 || (key && (!value || value[key] === 0 || value[key] === undefined))) {
    throw new ApiError(`${path}: ${reason || "failed"}`);
  }
  return value;
}

async function inParallel(items, work) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      results[i] = await work(items[i]);
    }
  }
  await Promise.all(Array.from({ length: Math.min(PARALLEL, items.length) }, worker));
  return results;
}

// pmid -> "up" | "down" | "drained", from the metrics; empty if they cannot be read.
async function health() {
  const found = new Map();
  try {
    const response = await fetch(new URL("metrics", ROOT), { cache: "no-store" });
    const text = await response.text();
    const sample = /^(vorchd_pm_up|vorchd_pm_drained)\{([^}]*)\}\s+(\S+)/gm;
    const up = new Map();
    const drained = new Set();
    for (const [, name, labels, value] of text.matchAll(sample)) {
      const pmid = /pmid="(\d+)"/.exec(labels);
      if (!pmid) continue;
      if (name === "vorchd_pm_up") up.set(Number(pmid[1]), Number(value) === 1);
      else if (Number(value) === 1) drained.add(Number(pmid[1]));
    }
    for (const [pmid, isUp] of up) {
      found.set(pmid, !isUp ? "down" : drained.has(pmid) ? "drained" : "up");
    }
  } catch (e) {
    // Health is a nicety: the page works from the seed API alone.
  }
  return found;
}

async function load() {
  const [types, images, pmids, pmHealth] = await Promise.all([
    must("vm/types", "types"),
    must("image/list", "images"),
    must("pm/list", "pmids"),
    health(),
  ]);
  const pms = await inParallel(pmids.pmids, async (pmid) => {
    const [query, listed] = await Promise.all([
      call("pm/query", { pmid }),
      call("pm/listvms", { pmid }),
    ]);
    const vmids = Array.isArray(listed.value && listed.value.vmids) ? listed.value.vmids : null;
    return { pmid, info: query.value || null, vmids };
  });
  const listed = new Set(pms.flatMap((pm) => pm.vmids || []));
  // Forget the VMs gone from the listings (all of them answered: else keep what we know).
  if (pms.every((pm) => pm.vmids)) {
    for (const vmid of state.vms.keys()) if (!listed.has(vmid)) state.vms.delete(vmid);
  }
  const unknown = [...listed].filter((vmid) => !state.vms.has(vmid));
  await inParallel(unknown, async (vmid) => {
    const { value } = await call("vm/query", { vmid });
    if (value && value.vmid) state.vms.set(vmid, value);
  });
  state.types = types.types;
  state.images = images.images;
  for (const pm of pms) pm.used = pm.info ? used(pm) : null;
  state.pms = pms;
  state.health = pmHealth;
}

// -- rendering ------------------------------------------------------------------------------

const RESOURCES = [
  ["cpu", "CPU", ""],
  ["ram", "RAM", " MiB"],
  ["disk", "Disk", " GiB"],
];

function number(n) {
  return String(Number(n.toFixed(2)));
}

function plural(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

// What the VMs on a PM (with its pm/query answer) take, by resource, from their
// flavors; while a VM or its flavor is not known, capacity - free stands in (true
// without overcommit). Worked out once a load, as pm.used.
function used(pm) {
  const fallback = {};
  for (const r of ["cpu", "ram", "disk"]) {
    fallback[r] = Math.max(pm.info.capacity[r] - pm.info.free[r], 0);
  }
  if (!pm.vmids) return fallback;
  const sum = { cpu: 0, ram: 0, disk: 0 };
  for (const vmid of pm.vmids) {
    const vm = state.vms.get(vmid);
    const type = vm && state.types.find((t) => t.tid === vm.instance_type);
    if (!type) return fallback;
    for (const r of Object.keys(sum)) sum[r] += type[r];
  }
  return sum;
}

// One resource of a PM: a bar of what is taken out of what may be taken (capacity times
// the overcommit ratio: used + free), and the free and capacity figures.
function bar(resource, label, unit, pm) {
  const info = pm.info;
  const capacity = info.capacity[resource];
  const free = info.free[resource];
  const taken = pm.used[resource];
  const allowed = taken + Math.max(free, 0);
  const percent = allowed > 0 ? Math.min((100 * taken) / allowed, 100) : 0;
  const level = percent >= 90 ? "full" : percent >= 70 ? "high" : "";
  const fill = el("div", { class: `fill ${level}` });
  fill.style.width = `${percent.toFixed(1)}%`;
  return el(
    "div",
    { class: "resource", "data-resource": resource },
    el("span", { class: "label" }, label),
    el(
      "div",
      {
        class: "bar",
        role: "meter",
        "aria-label": `${label} used`,
        "aria-valuemin": "0",
        "aria-valuemax": String(allowed),
        "aria-valuenow": String(taken),
      },
      fill,
    ),
    el(
      "span",
      { class: "numbers" },
      el("span", { class: "free" }, number(free)),
      ` free of `,
      el("span", { class: "capacity" }, number(capacity)),
      unit,
      allowed > capacity && capacity > 0
        ? el("span", { class: "over", title: "overcommit ratio" }, ` ×${number(allowed / capacity)}`)
        : null,
    ),
  );
}

function flavorText(tid) {
  const type = state.types.find((t) => t.tid === tid);
  return type ? `${tid}: ${type.cpu} CPU, ${type.ram} MiB, ${type.disk} GiB` : `${tid}`;
}

function destroyButton(vmid) {
  const armed = state.armed.has(vmid);
  const busy = state.busy.has(vmid);
  return el(
    "button",
    {
      type: "button",
      class: `destroy${armed ? " armed" : ""}`,
      "data-vmid": vmid,
      title: armed ? "Click again to destroy" : "Destroy this VM",
      onclick: () => destroyClicked(vmid),
      ...(busy ? { disabled: "" } : {}),
    },
    busy ? "Destroying…" : armed ? "Confirm destroy" : "Destroy",
  );
}

function vmTable(pm) {
  if (!pm.vmids) return el("p", { class: "empty" }, "pm/listvms does not answer for this PM");
  if (pm.vmids.length === 0) return el("p", { class: "empty" }, "No VMs");
  const rows = pm.vmids.map((vmid) => {
    const vm = state.vms.get(vmid);
    return el(
      "tr",
      { class: "vm", "data-vmid": vmid },
      el("td", { class: "num" }, vmid),
      el("td", { class: "name" }, vm ? vm.name : "?"),
      el("td", {}, vm ? flavorText(vm.instance_type) : "?"),
      el("td", {}, destroyButton(vmid)),
    );
  });
  return el(
    "table",
    { class: "vms" },
    el("thead", {}, el("tr", {}, el("th", {}, "vmid"), el("th", {}, "name"), el("th", {}, "flavor"), el("th"))),
    el("tbody", {}, ...rows),
  );
}

function pmCard(pm) {
  const status = state.health.get(pm.pmid) || (pm.info ? "" : "unknown");
  const title = el(
    "h3",
    {},
    `PM ${pm.pmid}`,
    status ? el("span", { class: `badge ${status}` }, status) : null,
    el("span", { class: "vmcount" }, pm.vmids ? plural(pm.vmids.length, "VM") : ""),
  );
  const body = pm.info
    ? el("div", { class: "resources" }, ...RESOURCES.map(([r, l, u]) => bar(r, l, u, pm)))
    : el("p", { class: "empty" }, "pm/query does not answer for this PM");
  return el("article", { class: "pm", "data-pmid": pm.pmid }, title, body, vmTable(pm));
}

function totals() {
  let cpu = [0, 0];
  let ram = [0, 0];
  for (const pm of state.pms) {
    if (!pm.info) continue;
    cpu = [cpu[0] + pm.used.cpu, cpu[1] + pm.info.capacity.cpu];
    ram = [ram[0] + pm.used.ram, ram[1] + pm.info.capacity.ram];
  }
  const vms = state.pms.reduce((n, pm) => n + (pm.vmids ? pm.vmids.length : 0), 0);
  return `${plural(state.pms.length, "PM")} · ${plural(vms, "VM")} · ${number(cpu[0])}/${number(cpu[1])} CPUs · ${number(ram[0])}/${number(ram[1])} MiB allocated`;
}

function fillSelect(select, options) {
  const key = JSON.stringify(options);
  if (select.dataset.options === key) return;
  const chosen = select.value;
  select.replaceChildren(...options.map(([value, text]) => el("option", { value }, text)));
  if (options.some(([value]) => String(value) === chosen)) select.value = chosen;
  select.dataset.options = key;
}

function render() {
  const model = JSON.stringify([
    state.types,
    state.images,
    state.pms,
    [...state.vms.entries()],
    [...state.health.entries()],
    [...state.armed.keys()],
    [...state.busy],
  ]);
  if (model === state.rendered) return; // nothing changed: leave the page as it is
  state.rendered = model;
  $("totals").textContent = totals();
  $("pm-count").textContent = `(${state.pms.length})`;
  $("pms").replaceChildren(...state.pms.map(pmCard));
  $("flavors").tBodies[0].replaceChildren(
    ...state.types.map((t) =>
      el("tr", { "data-tid": t.tid }, el("td", {}, t.tid), el("td", {}, t.cpu), el("td", {}, t.ram), el("td", {}, t.disk)),
    ),
  );
  $("images").tBodies[0].replaceChildren(
    ...state.images.map((i) => el("tr", { "data-image": i.id }, el("td", {}, i.id), el("td", {}, i.name))),
  );
  fillSelect(
    $("create-type"),
    state.types.map((t) => [t.tid, flavorText(t.tid)]),
  );
  fillSelect(
    $("create-image"),
    state.images.map((i) => [i.id, `${i.id}: ${i.name}`]),
  );
}

function banner(text) {
  const node = $("banner");
  node.textContent = text || "";
  node.hidden = !text;
}

// -- refreshing -----------------------------------------------------------------------------

let timer = null;
let loading = null; // the load under way
let queued = null; // the load asked for while one was under way

// Load and show the fleet; while a load is under way, one more follows it (what it read
// may predate the change that asked for this one).
function refresh() {
  if (loading) {
    if (!queued) {
      queued = loading.then(() => {
        queued = null;
        return refresh();
      });
    }
    return queued;
  }
  clearTimeout(timer);
  loading = (async () => {
    try {
      await load();
      render();
      banner("");
      $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
      document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
    } catch (e) {
      banner(`Cannot load the fleet: ${e.message}.${$("auto").checked ? " Retrying…" : ""}`);
    } finally {
      loading = null;
      if ($("auto").checked) timer = setTimeout(refresh, INTERVAL * 1000);
    }
  })();
  return loading;
}

// -- acting ---------------------------------------------------------------------------------

function status(text, kind, vmid) {
  const node = $("create-status");
  node.textContent = text;
  node.className = `status ${kind || ""}`;
  if (vmid) node.dataset.vmid = vmid;
  else delete node.dataset.vmid;
}

async function create(event) {
  event.preventDefault();
  const name = $("create-name").value;
  const tid = $("create-type").value;
  const image = $("create-image").value;
  if (!name) return status("Give the VM a name.", "error");
  const button = $("create-button");
  button.disabled = true;
  const started = Date.now();
  const waiting = () => status(`Creating “${name}”… ${Math.round((Date.now() - started) / 1000)} s`, "busy");
  waiting();
  const ticker = setInterval(waiting, 1000);
  try {
    const { value, reason } = await call("vm/create", { name, instance_type: tid, image_id: image });
    clearInterval(ticker);
    if (value && value.vmid > 0) {
      let where = "";
      try {
        const vm = await must("vm/query", "vmid", { vmid: value.vmid });
        state.vms.set(value.vmid, vm);
        where = ` on PM ${vm.pmid}`;
      } catch (e) {
        // Created all the same; the next refresh shows where.
      }
      status(`Created VM ${value.vmid} “${name}”${where}.`, "ok", value.vmid);
      $("create-name").value = "";
    } else {
      status(`Not created: ${reason || "the daemon refused"}.`, "error");
    }
  } catch (e) {
    clearInterval(ticker);
    status(`Not created: ${e.message}.`, "error");
  } finally {
    button.disabled = false;
  }
  await refresh();
}

async function destroyClicked(vmid) {
  if (state.busy.has(vmid)) return;
  const armed = state.armed.get(vmid);
  if (!armed) {
    const timer = setTimeout(() => {
      state.armed.delete(vmid);
      render();
    }, ARMED_FOR);
    state.armed.set(vmid, { timer, at: Date.now() });
    return render();
  }
  if (Date.now() - armed.at < SETTLE) return; // a double-click is one click
  clearTimeout(armed.timer);
  state.armed.delete(vmid);
  state.busy.add(vmid);
  render();
  try {
    const { value, reason } = await call("vm/destroy", { vmid });
    if (value && value.status === 1) status(`Destroyed VM ${vmid}.`, "ok");
    else status(`VM ${vmid} not destroyed: ${reason || "the daemon refused"}.`, "error");
  } catch (e) {
    status(`VM ${vmid} not destroyed: ${e.message}.`, "error");
  } finally {
    state.busy.delete(vmid);
    render();
  }
  await refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("interval").textContent = INTERVAL;
  $("create-form").addEventListener("submit", create);
  $("reload").addEventListener("click", refresh);
  $("auto").addEventListener("change", () => {
    clearTimeout(timer);
    if ($("auto").checked) refresh();
  });
  refresh();
});
