"use strict";
// The vorchd dashboard. It loads the whole fleet with one GET /v1/fleet, then follows the
// changes on /v1/events (Server-Sent Events) and re-renders only the PMs they touch. If the
// event stream cannot be followed, it reloads /v1/fleet every 5 s instead. It creates and
// destroys VMs through the seed API, as any client does, and puts every value on the page
// as text, never as HTML: VM names are free text and show exactly as given.
//
// A VM shown in an open PM shows its state as its hypervisor has it (GET /vm/info: running,
// paused, shutoff, ...), asked while its row is on screen: when it comes into view, after
// every change of it, and every 15 s; VMs off screen cost the hypervisors nothing. It shows
// the actions that state allows (stop, start, reboot, suspend, resume), a migrate target
// and a resize, each a call of the API beside the seed one (/vm/stop, ..., /vm/migrate,
// /vm/resize).
//
// At a thousand PMs the page stays usable: every PM is one compact row (rows off screen
// cost nothing to lay out, see style.css), a PM shows its VMs only once opened, and the
// filter box finds a PM by id or a VM by name or id. The block volumes show in a table of
// their own (from /v1/fleet, then the volume and volume_gone events).

const ROOT = new URL("..", document.location.href);
const POLL = 5000; // ms between reloads of the fleet while its events cannot be followed
const RETRY_EVENTS = 60000; // ms before trying again an event stream that failed for good
const RETRY_LOAD = 2000; // ms before loading again a fleet that could not be loaded
const RENDER_AFTER = 30; // ms: events arriving together are rendered once
const FILTER_AFTER = 120; // ms of no typing before the filter applies
const ARMED_FOR = 5000; // ms a destroy button waits for its confirming click
const SETTLE = 400; // ms before it takes one (the second click of a double-click is not)
// Every PM shown shows its VMs when there are at most this many PMs and VMs to show.
const OPEN_PMS = 50;
const OPEN_VMS = 200;
const ROWS = 100; // VM rows an open PM shows before a "show all" button
const CHANGES = ["pm", "vm", "vm_gone", "catalog", "settings", "volume", "volume_gone"];
const INFO_FRESH = 15000; // ms a VM's state from /vm/info counts as current
const INFO_AT_ONCE = 4; // /vm/info calls in flight at most
// What each action is called, as it runs and once done; and the hypervisor states that
// allow it (a VM whose state is not known offers them all: the daemon says no if need be).
const ACTIONS = {
  stop: { label: "Stop", doing: "stopping", done: "stopped", from: ["running", "paused", "blocked", "crashed", "pmsuspended"] },
  start: { label: "Start", doing: "starting", done: "started", from: ["shutoff", "shutdown", "crashed"] },
  reboot: { label: "Reboot", doing: "rebooting", done: "rebooted", from: ["running", "blocked"] },
  suspend: { label: "Suspend", doing: "suspending", done: "suspended", from: ["running", "blocked"] },
  resume: { label: "Resume", doing: "resuming", done: "resumed", from: ["paused", "pmsuspended"] },
};

const state = {
  loaded: false, // a fleet has been loaded
  base: null, // the position in the daemon's change stream of the fleet loaded
  seq: null, // the position of the last change applied to it
  policy: "",
  ratios: { cpu: 1, ram: 1, disk: 1 },
  types: [], // [{tid, cpu, ram, disk}]
  images: [], // [{id, name}]
  typeOf: new Map(), // tid -> its flavor
  pms: new Map(), // pmid -> {pmid, state, capacity, free, vmids}, as /v1/fleet gives them
  order: [], // pmids, in the fleet's order
  vms: new Map(), // vmid -> {vmid, name, instance_type, pmid, image_id, state, mac}
  volumes: new Map(), // volumeid -> {volumeid, name, size, status, vmid?}, as volume/query
  filter: null, // what the filter box asks for (see matcher), or null
  only: "", // only PMs in this state, or "" for all
  toggled: new Map(), // pmid -> whether a click opened (true) or closed (false) it
  everyRow: new Set(), // pmids whose open VM table shows every row
  armed: new Map(), // vmid -> {timer, at} of a destroy button waiting to be confirmed
  busy: new Set(), // vmids being destroyed
  info: new Map(), // vmid -> {state, ips, at} from /vm/info (state null: it could not be read)
  acting: new Map(), // vmid -> what is being done to it (a call on a running VM), as text
  chosen: new Map(), // vmid -> {migrate, resize}: what its selects were set to
};

// What the next render must redo: some PMs (by pmid), or everything.
const dirty = { all: true, pms: new Set(), volumes: false };

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

// -- the fleet and its changes ----------------------------------------------------------

// A position in the change stream as [major, minor], for comparing: a number, or a Redis
// stream id ("1700000000000-3"); null if it is neither.
function position(seq) {
  const m = /^(\d+)(?:-(\d+))?$/.exec(String(seq));
  return m ? [Number(m[1]), Number(m[2] || 0)] : null;
}

// Whether position a comes after b (true when either cannot be read: apply it).
function after(a, b) {
  const x = position(a);
  const y = position(b);
  if (!x || !y) return true;
  return x[0] > y[0] || (x[0] === y[0] && x[1] > y[1]);
}

function touch(pmid) {
  if (pmid !== undefined && pmid !== null) dirty.pms.add(pmid);
}

function setCatalog(types, images) {
  state.types = Array.isArray(types) ? types : [];
  state.images = Array.isArray(images) ? images : [];
  state.typeOf = new Map(state.types.map((t) => [t.tid, t]));
  dirty.all = true;
}

function setSettings(policy, ratios) {
  state.policy = policy || "";
  state.ratios = { cpu: 1, ram: 1, disk: 1, ...(ratios || {}) };
  dirty.all = true;
}

function setVM(vm) {
  vm.search = String(vm.name).toLowerCase();
  const before = state.vms.get(vm.vmid);
  state.vms.set(vm.vmid, vm);
  if (before && before.pmid !== vm.pmid) touch(before.pmid);
  touch(vm.pmid);
}

// The whole fleet, as /v1/fleet answers it, replaces what is shown.
function setFleet(fleet) {
  state.base = fleet.seq;
  state.seq = fleet.seq;
  setCatalog(fleet.types, fleet.images);
  setSettings(fleet.policy, fleet.ratios);
  state.pms = new Map(fleet.pms.map((pm) => [pm.pmid, pm]));
  state.order = fleet.pms.map((pm) => pm.pmid);
  state.vms = new Map();
  for (const vm of fleet.vms) setVM(vm);
  state.volumes = new Map((fleet.volumes || []).map((v) => [v.volumeid, v]));
  state.loaded = true;
  dirty.all = true;
}

// Apply one change event ({name, seq, data}) to what is shown, unless the fleet loaded
// already has it. (Events come in order, and several may share a position: a settings
// change and the PM changes it makes.)
function apply(event) {
  if (event.seq && state.base !== null && !after(event.seq, state.base)) return;
  const data = event.data;
  switch (event.name) {
    case "pm": {
      if (!state.pms.has(data.pmid)) state.order.push(data.pmid);
      state.pms.set(data.pmid, data);
      touch(data.pmid);
      break;
    }
    case "vm": {
      setVM(data);
      // Its record changed (moved, resized, gone missing...): ask its state again.
      stale(data.vmid);
      // Its PM's own event says so too; until it arrives, list it there already.
      const pm = state.pms.get(data.pmid);
      if (pm && !pm.vmids.includes(data.vmid)) {
        pm.vmids = [...pm.vmids, data.vmid].sort((a, b) => a - b);
      }
      break;
    }
    case "vm_gone": {
      const vm = state.vms.get(data.vmid);
      state.vms.delete(data.vmid);
      if (state.armed.has(data.vmid)) clearTimeout(state.armed.get(data.vmid).timer);
      state.armed.delete(data.vmid);
      state.info.delete(data.vmid);
      state.chosen.delete(data.vmid);
      for (const pmid of new Set([data.pmid, vm && vm.pmid])) {
        const pm = state.pms.get(pmid);
        if (pm && pm.vmids.includes(data.vmid)) pm.vmids = pm.vmids.filter((v) => v !== data.vmid);
        touch(pmid);
      }
      break;
    }
    case "catalog":
      setCatalog(data.types, data.images);
      break;
    case "settings":
      setSettings(data.policy, data.ratios);
      break;
    case "volume":
      state.volumes.set(data.volumeid, data);
      dirty.volumes = true;
      break;
    case "volume_gone":
      state.volumes.delete(data.volumeid);
      dirty.volumes = true;
      break;
    default:
      return;
  }
  if (event.seq) state.seq = event.seq;
  document.body.dataset.seq = String(state.seq);
  schedule();
}

let loading = null; // the load of the fleet under way
let queued = null; // the load asked for while one was under way
let held = null; // change events that arrived while a load was under way, or null
let retry = null; // the timer of a load that failed

// Load the fleet and show it; while a load is under way, one more follows it (what it
// read may predate the change that asked for this one). Events arriving meanwhile are
// held, and those newer than the fleet loaded are applied after it.
function reload() {
  if (loading) {
    if (!queued) {
      queued = loading.then(() => {
        queued = null;
        return reload();
      });
    }
    return queued;
  }
  clearTimeout(retry);
  held = held || [];
  loading = load().finally(() => {
    loading = null;
  });
  return loading;
}

async function load() {
  try {
    const { value, reason } = await call("v1/fleet");
    if (!value || typeof value !== "object" || !Array.isArray(value.pms)) {
      throw new ApiError(`v1/fleet: ${reason || "no fleet"}`);
    }
    setFleet(value);
    for (const event of held) apply(event);
    held = null;
    render();
  } catch (e) {
    held = null;
    banner(`Cannot load the fleet: ${e.message}. Retrying…`);
    if (!stream.polling) retry = setTimeout(reload, RETRY_LOAD);
    return;
  }
  banner("");
  $("updated").textContent = `loaded ${new Date().toLocaleTimeString()}`;
  document.body.dataset.seq = String(state.seq);
  document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  if (!performance.getEntriesByName("vorchd-first-render").length) {
    // Once the browser has drawn the frame (a test reads it).
    requestAnimationFrame(() => setTimeout(() => performance.mark("vorchd-first-render")));
  }
  const since = stream.since;
  stream.since = undefined;
  if (since !== undefined && (since === null || after(since, state.base))) {
    // The event stream began after this fleet was read: what happened between is missed.
    setTimeout(reload);
  }
}

const stream = {
  connected: false, // whether the event stream said hello since it last failed
  helloes: 0, // how many times it did
  since: undefined, // where its first hello began while the first load was under way
  polling: null, // the timer reloading the fleet while the events are not followed
};

function live(text, kind) {
  const node = $("live");
  node.textContent = text;
  node.className = `live ${kind}`;
}

function poll(on) {
  if (on && !stream.polling) {
    stream.polling = setInterval(reload, POLL);
  } else if (!on && stream.polling) {
    clearInterval(stream.polling);
    stream.polling = null;
  }
}

// The stream said hello, from position seq: the fleet shown must be at least that new.
function hello(seq) {
  const first = stream.helloes === 0;
  stream.helloes += 1;
  stream.connected = true;
  live("live", "live");
  poll(false);
  if (!first || (!state.loaded && !loading)) {
    reload(); // a reconnection: whatever happened while it was down is missed
  } else if (loading) {
    stream.since = seq; // the load under way may have read the fleet before seq
  } else if (seq === null || after(seq, state.base)) {
    reload();
  }
}

// Follow the fleet's changes on /v1/events; reload the fleet at every reconnection and
// every resync, and every 5 s while the stream is down.
function follow() {
  if (typeof EventSource === "undefined") {
    live(`reloading every ${POLL / 1000} s`, "polling");
    poll(true);
    return;
  }
  const source = new EventSource(new URL("v1/events", ROOT));
  source.addEventListener("hello", (e) => {
    let seq = null;
    try {
      seq = JSON.parse(e.data).seq ?? null;
    } catch (err) {
      // A hello without a position: the fleet is reloaded to be sure.
    }
    hello(seq);
  });
  source.addEventListener("resync", () => reload());
  for (const name of CHANGES) {
    source.addEventListener(name, (e) => {
      let data;
      try {
        data = JSON.parse(e.data);
      } catch (err) {
        return;
      }
      const event = { name, seq: e.lastEventId, data };
      if (held) held.push(event);
      else if (state.loaded) apply(event);
    });
  }
  source.addEventListener("error", () => {
    stream.connected = false;
    poll(true);
    if (source.readyState === EventSource.CLOSED) {
      // Not a stream at all (no /v1/events here): keep reloading, and try it again later.
      live(`reloading every ${POLL / 1000} s`, "polling");
      setTimeout(follow, RETRY_EVENTS);
    } else {
      live("reconnecting…", "polling"); // the browser reconnects by itself
    }
  });
}

// -- rendering --------------------------------------------------------------------------

const RESOURCES = [
  ["cpu", "CPU", ""],
  ["ram", "RAM", " MiB"],
  ["disk", "Disk", " GiB"],
];

function number(n) {
  return String(Number(Number(n).toFixed(2)));
}

function plural(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

// What may be placed on a PM, by resource: its capacity times the overcommit ratio.
function allowed(pm, resource) {
  return Math.floor(pm.capacity[resource] * (state.ratios[resource] ?? 1));
}

// One resource of a PM: a bar of what is taken out of what may be taken, and the free and
// capacity figures, with the overcommit ratio where there is one.
function bar(resource, label, unit, pm) {
  const capacity = pm.capacity[resource];
  const free = pm.free[resource];
  const ratio = state.ratios[resource] ?? 1;
  const most = allowed(pm, resource);
  const taken = most - free;
  const percent = most > 0 ? Math.min(Math.max((100 * taken) / most, 0), 100) : 0;
  const level = percent >= 90 ? "full" : percent >= 70 ? "high" : "";
  const fill = el("div", { class: `fill ${level}` });
  fill.style.width = `${percent.toFixed(1)}%`;
  return el(
    "div",
    { class: "resource", "data-resource": resource },
    el(
      "span",
      { class: "numbers" },
      el("span", { class: "label" }, label),
      " ",
      el("span", { class: "free" }, number(free)),
      " free of ",
      el("span", { class: "capacity" }, number(capacity)),
      unit,
      ratio > 1 ? el("span", { class: "over", title: "overcommit ratio" }, ` ×${number(ratio)}`) : null,
    ),
    el(
      "div",
      {
        class: "bar",
        role: "meter",
        "aria-label": `${label} used`,
        "aria-valuemin": "0",
        "aria-valuemax": String(most),
        "aria-valuenow": String(taken),
      },
      fill,
    ),
  );
}

function flavorText(tid) {
  const type = state.typeOf.get(tid);
  return type ? `${tid}: ${type.cpu} CPU, ${type.ram} MiB, ${type.disk} GiB` : `${tid}`;
}

function imageText(id) {
  const image = state.images.find((i) => i.id === id);
  return image ? image.name : id === undefined ? "" : String(id);
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

// The state a VM's row shows: what is being done to it, else what its hypervisor said,
// else what the fleet records (missing), else "…" until /vm/info answers.
function shownState(vmid) {
  const vm = state.vms.get(vmid);
  const acting = state.acting.get(vmid);
  if (acting) return { text: `${acting}…`, kind: "busy" };
  const info = state.info.get(vmid);
  if (info && info.state) return { text: info.state, kind: info.state };
  if (vm && vm.state && vm.state !== "active") return { text: vm.state, kind: vm.state };
  if (info) return { text: "unknown", kind: "unknown", title: info.reason || "" };
  return { text: "…", kind: "loading" };
}

function stateCell(vmid) {
  const shown = shownState(vmid);
  return el(
    "td",
    { class: "state" },
    el("span", { class: `vmstate ${shown.kind}`, "data-state": shown.kind, title: shown.title || "" }, shown.text),
  );
}

// The addresses its guest has (from /vm/info), its NIC's MAC address (from the fleet) as
// the cell's title: "-" for none yet, "…" until /vm/info answers.
function addressCell(vmid) {
  const vm = state.vms.get(vmid);
  const info = state.info.get(vmid);
  const ips = info && Array.isArray(info.ips) ? info.ips : null;
  const text = ips === null ? "…" : ips.length ? ips.join(", ") : "-";
  const mac = vm && vm.mac ? `MAC ${vm.mac}` : "";
  return el("td", { class: "address", title: mac, "data-mac": (vm && vm.mac) || "" }, text);
}

// The actions the VM's state allows (all of them while it is not known), as buttons.
function actionsCell(vmid) {
  const info = state.info.get(vmid);
  const known = info && info.state;
  const busy = state.acting.has(vmid) || state.busy.has(vmid);
  const buttons = Object.entries(ACTIONS)
    .filter(([, a]) => !known || a.from.includes(info.state))
    .map(([name, a]) =>
      el(
        "button",
        {
          type: "button",
          class: "act",
          "data-action": name,
          "data-vmid": vmid,
          onclick: () => act(vmid, name),
          ...(busy ? { disabled: "" } : {}),
        },
        a.label,
      ),
    );
  return el("td", { class: "actions" }, ...buttons);
}

// A select of C{options} ([value, text]) showing what was chosen for the VM, if offered.
function choice(vmid, kind, options, attrs) {
  const select = el(
    "select",
    {
      ...attrs,
      onchange: (e) => state.chosen.set(vmid, { ...(state.chosen.get(vmid) || {}), [kind]: e.target.value }),
    },
    ...options.map(([value, text]) => el("option", { value }, text)),
  );
  const chosen = (state.chosen.get(vmid) || {})[kind];
  if (chosen !== undefined && options.some(([value]) => String(value) === chosen)) select.value = chosen;
  return select;
}

// Where the VM may go (the policy's choice, or another PM that is up) and which flavor it
// may take instead of its own.
function changeCell(vmid) {
  const vm = state.vms.get(vmid);
  if (!vm) return el("td", { class: "change" });
  const busy = state.acting.has(vmid) || state.busy.has(vmid);
  const disabled = busy ? { disabled: "" } : {};
  const targets = [["", "policy's choice"]];
  for (const pmid of state.order) {
    const pm = state.pms.get(pmid);
    if (pm && pm.state === "up" && pmid !== vm.pmid) targets.push([pmid, `PM ${pmid}`]);
  }
  const flavors = state.types.filter((t) => t.tid !== vm.instance_type).map((t) => [t.tid, flavorText(t.tid)]);
  return el(
    "td",
    { class: "change" },
    el(
      "span",
      { class: "move" },
      choice(vmid, "migrate", targets, { class: "migrate-target", "aria-label": `Migrate VM ${vmid} to` }),
      el("button", { type: "button", class: "migrate", "data-vmid": vmid, onclick: () => migrate(vmid), ...disabled }, "Migrate"),
    ),
    flavors.length
      ? el(
          "span",
          { class: "resize" },
          choice(vmid, "resize", flavors, { class: "resize-type", "aria-label": `Resize VM ${vmid} to` }),
          el("button", { type: "button", class: "resize", "data-vmid": vmid, onclick: () => resize(vmid), ...disabled }, "Resize"),
        )
      : null,
  );
}

function vmRow(vmid) {
  const vm = state.vms.get(vmid);
  const missing = vm && vm.state && vm.state !== "active";
  return el(
    "tr",
    { class: `vm${missing ? " missing" : ""}`, "data-vmid": vmid },
    el("td", { class: "num" }, vmid),
    el("td", { class: "name" }, vm ? vm.name : "…"),
    el("td", {}, vm ? flavorText(vm.instance_type) : ""),
    el("td", {}, vm ? imageText(vm.image_id) : ""),
    stateCell(vmid),
    addressCell(vmid),
    actionsCell(vmid),
    changeCell(vmid),
    el("td", {}, destroyButton(vmid)),
  );
}

// The row of VM vmid, in the card last rendered for its PM (shown or not), or null.
function rowOf(vmid) {
  const vm = state.vms.get(vmid);
  const card = vm && cards.get(vm.pmid);
  return card ? card.node.querySelector(`tr.vm[data-vmid="${vmid}"]`) : null;
}

// Show a VM's state and actions anew in its row, in place: the rest of the row (a select
// being chosen from, say) stays as it is.
function showState(vmid) {
  const row = rowOf(vmid);
  if (!row) return;
  row.querySelector("td.state").replaceWith(stateCell(vmid));
  row.querySelector("td.address").replaceWith(addressCell(vmid));
  row.querySelector("td.actions").replaceWith(actionsCell(vmid));
}

// -- the state of VMs, from /vm/info ----------------------------------------------------

const infoQueue = { wanted: [], queued: new Set(), running: 0 };

// Ask the VM's state of its hypervisor, unless it was asked recently (or force).
function wantInfo(vmid, force) {
  const known = state.info.get(vmid);
  if (!force && known && Date.now() - known.at < INFO_FRESH) return;
  if (infoQueue.queued.has(vmid)) return;
  infoQueue.queued.add(vmid);
  infoQueue.wanted.push(vmid);
  pumpInfo();
}

// The VM's record changed: its state shown may be out of date.
function stale(vmid) {
  const known = state.info.get(vmid);
  if (known) known.at = 0;
}

function pumpInfo() {
  while (infoQueue.running < INFO_AT_ONCE && infoQueue.wanted.length) {
    const vmid = infoQueue.wanted.shift();
    infoQueue.running += 1;
    readInfo(vmid).finally(() => {
      infoQueue.running -= 1;
      infoQueue.queued.delete(vmid);
      pumpInfo();
    });
  }
}

async function readInfo(vmid) {
  if (!state.vms.has(vmid)) return;
  let entry;
  try {
    const { value, reason } = await call("vm/info", { vmid });
    if (value && typeof value === "object" && value.vmid === vmid && typeof value.state === "string") {
      entry = { state: value.state, ips: Array.isArray(value.ips) ? value.ips : [], at: Date.now() };
    } else {
      entry = { state: null, reason: reason || "no state", at: Date.now() };
    }
  } catch (e) {
    entry = { state: null, reason: e.message, at: Date.now() };
  }
  if (!state.vms.has(vmid)) return; // destroyed meanwhile
  const before = state.info.get(vmid);
  state.info.set(vmid, entry);
  const moved = !before || String(before.ips) !== String(entry.ips);
  if (!before || before.state !== entry.state || moved) showState(vmid);
}

// Every VM row on screen asks its state, unless it is fresh.
function askVisible() {
  if (document.visibilityState === "hidden") return;
  const bottom = window.innerHeight;
  for (const row of document.querySelectorAll("#pms tr.vm")) {
    const box = row.getBoundingClientRect();
    if (box.bottom > 0 && box.top < bottom) wantInfo(Number(row.dataset.vmid));
  }
}

let askTimer = null;

// Ask soon (once the page has settled after a render or a scroll).
function askSoon() {
  if (askTimer === null) {
    askTimer = setTimeout(() => {
      askTimer = null;
      askVisible();
    }, RENDER_AFTER);
  }
}

// The VMs an open PM shows: all of them, or those the filter found.
function vmTable(item) {
  const { pm, vmids } = item;
  if (pm.vmids.length === 0) return el("p", { class: "empty" }, "No VMs");
  const every = state.everyRow.has(pm.pmid);
  const rows = every ? vmids : vmids.slice(0, ROWS);
  const notes = [];
  if (vmids.length < pm.vmids.length) {
    notes.push(`${vmids.length} of ${plural(pm.vmids.length, "VM")} match the filter`);
  }
  const table = el(
    "table",
    { class: "vms" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", {}, "vmid"),
        el("th", {}, "name"),
        el("th", {}, "flavor"),
        el("th", {}, "image"),
        el("th", {}, "state"),
        el("th", {}, "address"),
        el("th", {}, "actions"),
        el("th", {}, "migrate · resize"),
        el("th"),
      ),
    ),
    el("tbody", {}, ...rows.map(vmRow)),
  );
  const more =
    rows.length < vmids.length
      ? el(
          "button",
          {
            type: "button",
            class: "more",
            onclick: () => {
              state.everyRow.add(pm.pmid);
              touch(pm.pmid);
              render();
            },
          },
          `Show all ${vmids.length}`,
        )
      : null;
  return el(
    "div",
    { class: "pm-vms", id: `vms-${pm.pmid}` },
    notes.length ? el("p", { class: "note" }, notes.join(" ")) : null,
    table,
    more,
  );
}

function toggle(pmid, open) {
  state.toggled.set(pmid, !open);
  touch(pmid);
  render();
  // Its card was made again: keep the focus on its button.
  const card = cards.get(pmid);
  if (card) card.node.querySelector(".toggle").focus({ preventScroll: true });
}

function pmCard(item) {
  const { pm, open } = item;
  const count = pm.vmids.length;
  const found = item.found ? ` · ${item.vmids.length} found` : "";
  const head = el(
    "div",
    { class: "pm-head", onclick: () => toggle(pm.pmid, open) },
    el(
      "button",
      {
        type: "button",
        class: "toggle",
        "aria-expanded": String(open),
        "aria-controls": `vms-${pm.pmid}`,
        title: open ? "Hide its VMs" : "Show its VMs",
      },
      `PM ${pm.pmid}`,
    ),
    el("span", { class: `badge ${pm.state}` }, pm.state),
    ...RESOURCES.map(([r, l, u]) => bar(r, l, u, pm)),
    el("span", { class: "vmcount" }, plural(count, "VM") + found),
  );
  return el(
    "article",
    { class: `pm ${pm.state}${open ? " open" : ""}`, "data-pmid": pm.pmid },
    head,
    open ? vmTable(item) : null,
  );
}

// What the filter box asks for: PMs by id, VMs by id or by a part of their name.
function matcher(text) {
  const q = text.trim().toLowerCase();
  if (!q) return null;
  const m = /^(?:(pm|vm)\s*#?\s*)?(\d+)$/.exec(q);
  return { q, id: m ? Number(m[2]) : null, kind: m ? m[1] || "" : null };
}

function vmMatches(m, vmid) {
  if (m.kind !== "pm" && m.id === vmid) return true;
  if (m.kind) return false; // "pm 12" and "vm 12" are ids, not names
  const vm = state.vms.get(vmid);
  return vm !== undefined && vm.search.includes(m.q);
}

// The PMs to show, in order, each with the VMs it would show when open, and whether it is.
function view() {
  const m = state.filter;
  const shown = [];
  let rows = 0;
  for (const pmid of state.order) {
    const pm = state.pms.get(pmid);
    if (!pm || (state.only && pm.state !== state.only)) continue;
    let vmids = pm.vmids;
    let found = false;
    if (m && !(m.kind !== "vm" && m.id === pmid)) {
      vmids = pm.vmids.filter((vmid) => vmMatches(m, vmid));
      if (vmids.length === 0) continue;
      found = true;
    }
    shown.push({ pm, vmids, found });
    rows += vmids.length;
  }
  const open = shown.length <= OPEN_PMS && rows <= OPEN_VMS;
  for (const item of shown) {
    const toggled = state.toggled.get(item.pm.pmid);
    item.open = toggled === undefined ? open : toggled;
    // What besides the PM itself its card shows: redone when this changes.
    item.key = item.open
      ? `open ${state.everyRow.has(item.pm.pmid)} ${item.found ? item.vmids.join(",") : "all"}`
      : `closed ${item.found ? item.vmids.length : ""}`;
  }
  return shown;
}

function totals() {
  const states = new Map();
  const cpu = [0, 0];
  const ram = [0, 0];
  let vms = 0;
  for (const pm of state.pms.values()) {
    states.set(pm.state, (states.get(pm.state) || 0) + 1);
    vms += pm.vmids.length;
    if (pm.state === "retired") continue;
    cpu[0] += allowed(pm, "cpu") - pm.free.cpu;
    cpu[1] += pm.capacity.cpu;
    ram[0] += allowed(pm, "ram") - pm.free.ram;
    ram[1] += pm.capacity.ram;
  }
  const byState = ["up", "drained", "down", "retired"]
    .filter((s) => states.get(s))
    .map((s) => `${states.get(s)} ${s}`)
    .join(", ");
  return (
    `${plural(state.pms.size, "PM")} (${byState || "none"}) · ${plural(vms, "VM")} · ` +
    `${number(cpu[0])}/${number(cpu[1])} CPUs · ${number(ram[0])}/${number(ram[1])} MiB allocated`
  );
}

function settingsText() {
  const over = RESOURCES.filter(([r]) => (state.ratios[r] ?? 1) !== 1)
    .map(([r, label]) => `${label} ×${number(state.ratios[r])}`)
    .join(", ");
  return `policy ${state.policy || "?"}${over ? ` · overcommit ${over}` : ""}`;
}

function fillSelect(select, options) {
  const key = JSON.stringify(options);
  if (select.dataset.options === key) return;
  const chosen = select.value;
  select.replaceChildren(...options.map(([value, text]) => el("option", { value }, text)));
  if (options.some(([value]) => String(value) === chosen)) select.value = chosen;
  select.dataset.options = key;
}

// The volumes, by id: each row's status, and the VM it is attached to.
function renderVolumes() {
  const volumes = [...state.volumes.values()].sort((a, b) => a.volumeid - b.volumeid);
  $("volume-count").textContent = String(volumes.length);
  $("volumes").tBodies[0].replaceChildren(
    ...volumes.map((v) =>
      el(
        "tr",
        { "data-volume": v.volumeid },
        el("td", {}, v.volumeid),
        el("td", { class: "name" }, v.name),
        el("td", {}, v.size),
        el("td", { class: "status" }, v.status),
        el("td", { class: "vm" }, v.vmid === undefined ? "" : v.vmid),
      ),
    ),
  );
  dirty.volumes = false;
}

function renderCatalog() {
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

const cards = new Map(); // pmid -> {node, key}: the card last rendered for a PM
let listed = []; // the pmids the list shows, in order
let renderTimer = null;

// Render soon: changes arriving together make one render.
function schedule() {
  if (renderTimer === null) renderTimer = setTimeout(render, RENDER_AFTER);
}

// Bring the page up to date with the state: the cards of the PMs that changed are made
// again, the others are kept as they are.
function render() {
  clearTimeout(renderTimer);
  renderTimer = null;
  if (!state.loaded) return;
  if (dirty.all || dirty.volumes) renderVolumes();
  if (dirty.all) {
    renderCatalog();
    cards.clear();
  }
  $("totals").textContent = totals();
  $("settings").textContent = settingsText();
  const shown = view();
  const list = $("pms");
  const nodes = [];
  const replaced = [];
  let reordered = shown.length !== listed.length;
  shown.forEach((item, i) => {
    const pmid = item.pm.pmid;
    let card = cards.get(pmid);
    if (!card || dirty.pms.has(pmid) || card.key !== item.key) {
      const node = pmCard(item);
      if (card) replaced.push([card.node, node]);
      card = { node, key: item.key };
      cards.set(pmid, card);
    }
    nodes.push(card.node);
    if (listed[i] !== pmid) reordered = true;
  });
  if (reordered || dirty.all) {
    list.replaceChildren(...nodes);
    if (nodes.length === 0) {
      list.append(el("p", { class: "empty" }, state.pms.size ? "No PM matches." : "No PMs."));
    }
  } else {
    for (const [old, node] of replaced) if (old.parentNode === list) old.replaceWith(node);
  }
  listed = shown.map((item) => item.pm.pmid);
  // A PM not shown keeps no card that would be out of date when it shows again.
  const showing = new Set(listed);
  for (const pmid of dirty.pms) if (!showing.has(pmid)) cards.delete(pmid);
  for (const pmid of cards.keys()) if (!state.pms.has(pmid)) cards.delete(pmid);
  $("pm-count").textContent =
    shown.length === state.pms.size ? `(${state.pms.size})` : `(${shown.length} of ${state.pms.size})`;
  dirty.all = false;
  dirty.pms.clear();
  askSoon();
}

function banner(text) {
  const node = $("banner");
  node.textContent = text || "";
  node.hidden = !text;
}

// -- acting -----------------------------------------------------------------------------

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
      // Its event may be here already; else ask where it went.
      let pmid = state.vms.has(value.vmid) ? state.vms.get(value.vmid).pmid : null;
      if (pmid === null) {
        try {
          const answer = await call("vm/query", { vmid: value.vmid });
          if (answer.value && answer.value.pmid) pmid = answer.value.pmid;
        } catch (e) {
          // Created all the same; the list shows where.
        }
      }
      if (pmid !== null) {
        // Open its PM, so that it shows there.
        state.toggled.set(pmid, true);
        touch(pmid);
        schedule();
      }
      status(`Created VM ${value.vmid} “${name}”${pmid !== null ? ` on PM ${pmid}` : ""}.`, "ok", value.vmid);
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
  if (!stream.connected) await reload();
}

// Call /vm/<what> on VM vmid (with args), showing doing meanwhile, then that it was done
// ("Stopped VM 7", "Migrated VM 7 to PM 2": done, then where) or why not; its state is
// asked again afterwards. Whether it was done.
async function running(vmid, what, args, doing, done, where = "") {
  if (state.acting.has(vmid) || state.busy.has(vmid)) return null;
  state.acting.set(vmid, doing);
  touchVM(vmid);
  let ok = false;
  try {
    const { value, reason } = await call(`vm/${what}`, { vmid, ...args });
    ok = Boolean(value && value.status === 1);
    const Done = done[0].toUpperCase() + done.slice(1);
    if (ok) status(`${Done} VM ${vmid}${where}.`, "ok");
    else status(`VM ${vmid} not ${done}${where}: ${reason || "the daemon refused"}.`, "error");
  } catch (e) {
    status(`VM ${vmid} not ${done}${where}: ${e.message}.`, "error");
  } finally {
    state.acting.delete(vmid);
    touchVM(vmid);
    wantInfo(vmid, true);
  }
  if (!stream.connected) await reload();
  return ok;
}

function act(vmid, action) {
  const a = ACTIONS[action];
  return running(vmid, action, {}, a.doing, a.done);
}

async function migrate(vmid) {
  const target = (state.chosen.get(vmid) || {}).migrate || "";
  const args = target ? { pmid: target } : {};
  const where = target ? ` to PM ${target}` : "";
  const moved = await running(vmid, "migrate", args, "migrating", "migrated", where);
  const vm = state.vms.get(vmid);
  if (moved && vm) {
    // Open the PM it went to, so that it shows there.
    state.toggled.set(vm.pmid, true);
    touch(vm.pmid);
    schedule();
  }
}

function resize(vmid) {
  const vm = state.vms.get(vmid);
  const chosen = (state.chosen.get(vmid) || {}).resize;
  const other = state.types.find((t) => !vm || t.tid !== vm.instance_type);
  const tid = chosen || (other ? String(other.tid) : "");
  if (!tid) return null;
  return running(vmid, "resize", { instance_type: tid }, "resizing", "resized", ` to flavor ${tid}`);
}

function touchVM(vmid) {
  const vm = state.vms.get(vmid);
  if (vm) touch(vm.pmid);
  render();
}

async function destroyClicked(vmid) {
  if (state.busy.has(vmid)) return;
  const armed = state.armed.get(vmid);
  if (!armed) {
    const timer = setTimeout(() => {
      state.armed.delete(vmid);
      touchVM(vmid);
    }, ARMED_FOR);
    state.armed.set(vmid, { timer, at: Date.now() });
    return touchVM(vmid);
  }
  if (Date.now() - armed.at < SETTLE) return; // a double-click is one click
  clearTimeout(armed.timer);
  state.armed.delete(vmid);
  state.busy.add(vmid);
  touchVM(vmid);
  try {
    const { value, reason } = await call("vm/destroy", { vmid });
    if (value && value.status === 1) status(`Destroyed VM ${vmid}.`, "ok");
    else status(`VM ${vmid} not destroyed: ${reason || "the daemon refused"}.`, "error");
  } catch (e) {
    status(`VM ${vmid} not destroyed: ${e.message}.`, "error");
  } finally {
    state.busy.delete(vmid);
    touchVM(vmid);
  }
  if (!stream.connected) await reload();
}

let filterTimer = null;

function filterChanged() {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    state.filter = matcher($("filter").value);
    state.only = $("state-filter").value;
    render();
  }, FILTER_AFTER);
}

document.addEventListener("DOMContentLoaded", () => {
  $("create-form").addEventListener("submit", create);
  $("filter-form").addEventListener("submit", (e) => e.preventDefault());
  for (const type of ["input", "change"]) $("filter").addEventListener(type, filterChanged);
  $("state-filter").addEventListener("change", filterChanged);
  $("reload").addEventListener("click", () => reload());
  state.filter = matcher($("filter").value);
  state.only = $("state-filter").value;
  reload();
  follow();
  setInterval(askVisible, INFO_FRESH);
  window.addEventListener("scroll", askSoon, { passive: true });
  window.addEventListener("resize", askSoon);
  document.addEventListener("visibilitychange", askSoon);
});
