// The cluster dashboard: reads this node's HTTP API (members, status, health, faults, stats,
// watch) and draws it. No library, nothing fetched from anywhere but the node serving the page.
"use strict";

const COLORS = { alive: "#2e9d5b", suspect: "#e0a100", dead: "#d33b3b", left: "#8a8a8a" };
const FEED_ROWS = 50;
// An HLC timestamp is milliseconds shifted left by this many logical bits (src/clock.rs).
const LOGICAL_BITS = 16;
// Each poll loop asks once a second, and never again before its last answer came.
const POLL_MS = 1000;
// Above this many members the ring names only the members that are not alive.
const RING_LABELS = 20;
// Points kept per series (one a second).
const SERIES_POINTS = 60;
// The series drawn: a per-second rate of a counter, or a level.
const SERIES = [
  { field: "rumors_received", label: "rumors received /s", rate: true },
  { field: "sync_keys_repaired", label: "keys repaired by anti-entropy /s", rate: true },
  { field: "conflicts", label: "conflicts /s", rate: true },
  { field: "tombstones_held", label: "tombstones held", rate: false },
];
const state = { members: [], status: null, faults: null, faultsOff: false, isolated: new Set(),
  samples: [], rows: new Map(), self: null, following: false, polling: false };

const byId = (a, b) => a.id.localeCompare(b.id, "en", { numeric: true });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function token() {
  return sessionStorage.getItem("hearsay-token");
}

// "Seen from" another member hands the token over in the link's fragment (never sent to a
// server): keep it for this origin's session and take it out of the address bar.
function adoptLinkedToken() {
  const match = /^#token=(.+)$/.exec(location.hash);
  if (!match) return;
  sessionStorage.setItem("hearsay-token", decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + location.search);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const sent = token();
  if (sent) headers["Authorization"] = "Bearer " + sent;
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (resp.status === 401) {
    // A request sent before the token was given must not bring the prompt back.
    if (sent === token()) askToken(sent ? "the node refused this token" : "");
    throw new Error("unauthorized");
  }
  return resp;
}

async function json(path) {
  const resp = await api(path);
  if (!resp.ok) throw new Error(path + ": " + resp.status);
  return resp.json();
}

function askToken(message) {
  const form = document.getElementById("token-form");
  form.hidden = false;
  document.getElementById("token-error").textContent = message || "";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function drawRing(members) {
  const ring = document.getElementById("ring");
  ring.replaceChildren();
  const n = members.length;
  const many = n > RING_LABELS;
  const radius = n > 12 ? 120 : 100;
  // As big as fits: neighbours never touch.
  const dot = many ? Math.max(3, Math.min(8, (Math.PI * radius) / n - 1.5)) : 14;
  members.forEach((m, i) => {
    const angle = (2 * Math.PI * i) / n - Math.PI / 2;
    const [cos, sin] = [Math.cos(angle), Math.sin(angle)];
    const circle = svg("circle", { cx: radius * cos, cy: radius * sin, r: dot,
      fill: COLORS[m.state] || "#000", "data-member": m.id, "data-state": m.state });
    circle.append(svg("title"));
    circle.firstChild.textContent = m.id + ": " + m.state + " (incarnation " + m.incarnation + ")";
    ring.append(circle);
    if (!many || m.state !== "alive") {
      // Neighbours' labels alternate between two radii so that they do not overlap.
      const at = radius + dot + 12 + (many ? (i % 2) * 14 : 0);
      const label = svg("text", { x: at * cos, y: at * sin + 4, "text-anchor": "middle",
        "data-member": m.id });
      label.textContent = m.id;
      ring.append(label);
    }
  });
  const alive = members.filter((m) => m.state === "alive").length;
  const count = svg("text", { x: 0, y: 5, "text-anchor": "middle", class: "ring-count" });
  count.textContent = alive + "/" + n + " alive";
  ring.append(count);
}

// One row per member, kept across polls (a click never lands on a row being replaced) and
// updated in place.
function memberRow(id) {
  let row = state.rows.get(id);
  if (row) return row;
  row = el("tr", { "data-member": id });
  for (let i = 0; i < 9; i++) row.append(el("td"));
  row.cells[6].className = "digest";
  const button = el("button", { type: "button", "data-member": id, hidden: "" });
  button.addEventListener("click", () => setCut(id, !state.isolated.has(id)));
  row.cells[8].append(button);
  state.rows.set(id, row);
  return row;
}

function drawMembers() {
  const body = document.querySelector("#members tbody");
  const reports = {};
  for (const node of (state.status && state.status.nodes) || []) reports[node.id] = node;
  const shown = new Set();
  state.members.forEach((m, i) => {
    shown.add(m.id);
    const row = memberRow(m.id);
    const report = reports[m.id] || {};
    const reasons = report.reasons && report.reasons.length ? " (" + report.reasons.join(", ") + ")" : "";
    const cells = [m.id, m.state, String(m.incarnation), m.gossip_addr, m.http_addr,
      report.keys == null ? "?" : String(report.keys),
      report.root ? report.root.slice(0, 12) : "?",
      report.health == null ? "?" : report.health + reasons];
    cells.forEach((text, c) => setText(row.cells[c], text));
    row.dataset.state = m.state;
    row.cells[1].className = "state " + m.state;
    row.cells[7].className = "health " + (report.health || "unknown");
    const button = row.cells[8].firstChild;
    const cut = state.isolated.has(m.id);
    button.hidden = !state.faults;
    button.dataset.action = cut ? "heal" : "cut";
    setText(button, cut ? "heal" : "cut");
    if (body.children[i] !== row) body.insertBefore(row, body.children[i] || null);
  });
  for (const [id, row] of state.rows) {
    if (!shown.has(id)) {
      row.remove();
      state.rows.delete(id);
    }
  }
  const counts = {};
  for (const m of state.members) counts[m.state] = (counts[m.state] || 0) + 1;
  setText(document.getElementById("member-summary"), state.members.length + " members: " +
    Object.entries(counts).map(([s, k]) => k + " " + s).join(", "));
  drawRing(state.members);
}

// The isolation endpoint makes two sides, each dropping the other's traffic, and names either
// side the same cut: from this node's dropped members, the smaller side is the one cut off.
function isolatedFrom(drop) {
  if (!drop.length) return new Set();
  const dropped = new Set(drop);
  const rest = state.members.map((m) => m.id).filter((id) => !dropped.has(id));
  return new Set(drop.length <= rest.length ? drop : rest);
}

// Cuts a member off from every other (each member drops its traffic), or heals it.
async function setCut(id, cut) {
  const isolated = new Set(state.isolated);
  if (cut) isolated.add(id); else isolated.delete(id);
  const body = JSON.stringify({ members: [...isolated] });
  const resp = await api("/v1/admin/isolation", { method: "PUT", body });
  if (resp.ok) state.isolated = new Set((await resp.json()).isolated);
  await loadFaults();
  drawMembers();
}

function drawConvergence() {
  const badge = document.getElementById("converged");
  const status = state.status;
  if (!status) return;
  if (status.converged) {
    badge.textContent = "converged";
    badge.className = "badge ok";
  } else {
    const counts = status.nodes.filter((n) => n.keys != null).map((n) => n.keys);
    const spread = counts.length ? Math.max(...counts) - Math.min(...counts) : 0;
    const silent = status.nodes.filter((n) => n.root == null).length;
    const why = [];
    if (spread) why.push(spread + " keys");
    if (silent) why.push(silent + " not answering");
    if (!why.length) why.push("digests differ");
    badge.textContent = "diverged, " + why.join(", ");
    badge.className = "badge bad";
  }
  const heal = status.heal;
  document.getElementById("heal").textContent = heal
    ? heal.members.join(", ") + " back: " + heal.keys_repaired + " keys repaired, " +
      heal.conflicts + " conflicts" + (heal.converged_after_ms == null ? " (in progress)"
        : ", converged after " + heal.converged_after_ms + " ms")
    : "none since this node started";
}

function drawSeries() {
  const samples = state.samples;
  const box = document.getElementById("series");
  box.replaceChildren(...SERIES.map((series) => {
    const points = [];
    for (let i = 1; i < samples.length; i++) {
      const [a, b] = [samples[i - 1], samples[i]];
      const seconds = Math.max(0.001, (b.at_ms - a.at_ms) / 1000);
      points.push(series.rate ? Math.max(0, b[series.field] - a[series.field]) / seconds
        : b[series.field]);
    }
    const top = Math.max(1, ...points);
    const line = svg("polyline", { fill: "none", stroke: "#2f6fb0", "stroke-width": 1.5,
      points: points.map((v, i) => (i * 200) / (SERIES_POINTS - 1) + "," + (38 - (v * 36) / top)).join(" ") });
    const chart = svg("svg", { viewBox: "0 0 200 40", class: "spark", "data-series": series.field });
    chart.append(line);
    const now = points.length ? points[points.length - 1] : 0;
    return el("div", { class: "series" }, el("span", {}, series.label + ": " +
      (series.rate ? now.toFixed(1) : String(now))), chart);
  }));
}

async function pollStats() {
  state.samples.push(await json("/v1/cluster/stats"));
  if (state.samples.length > SERIES_POINTS + 1) state.samples.shift();
  drawSeries();
}

// Members, this node's health and faults: quick answers from this node alone.
async function pollMembers() {
  const [members, health] = await Promise.all([json("/v1/cluster/members"), json("/v1/health")]);
  state.members = members.members.sort(byId);
  state.self = health.node;
  await loadFaults();
  document.getElementById("node").textContent = health.node;
  document.getElementById("health").textContent = "this node: " + health.status +
    (health.reasons.length ? " (" + health.reasons.join(", ") + ")" : "");
  drawSelector();
  drawMembers();
}

// Every member's digest and health: this node asks each of them, up to a second.
async function pollStatus() {
  state.status = await json("/v1/cluster/status");
  drawMembers();
  drawConvergence();
}

// Runs `step` every `ms`, one at a time, until the page goes.
async function every(ms, step) {
  for (;;) {
    const started = performance.now();
    try {
      await step();
    } catch (e) {
      if (e.message !== "unauthorized") console.warn(e.message);
    }
    await sleep(Math.max(0, ms - (performance.now() - started)));
  }
}

function drawSelector() {
  const select = document.getElementById("view-from");
  const ids = state.members.map((m) => m.id).join(",");
  if (select.dataset.ids === ids) return;
  select.dataset.ids = ids;
  select.replaceChildren(...state.members.map((m) =>
    el("option", Object.assign({ value: location.protocol + "//" + m.http_addr + "/ui" },
      m.id === state.self ? { selected: "" } : {}), m.id)));
}

async function loadFaults() {
  if (state.faultsOff) return;
  const resp = await api("/v1/admin/faults");
  if (resp.status === 404) {
    state.faultsOff = true;
    return;
  }
  if (!resp.ok) return;
  state.faults = await resp.json();
  state.isolated = isolatedFrom(state.faults.drop);
  document.getElementById("faults").hidden = false;
  const slider = document.getElementById("loss");
  if (document.activeElement !== slider) {
    slider.value = String(state.faults.loss);
    setText(document.getElementById("loss-value"), String(state.faults.loss));
  }
}

async function follow() {
  if (state.following) return;
  state.following = true;
  // A fetch, not an EventSource, so that the token goes in a header.
  for (;;) {
    try {
      const resp = await api("/v1/watch");
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          showEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (e) {
      if (e.message === "unauthorized") {
        state.following = false;
        return;
      }
    }
    await sleep(1000);
  }
}

function showEvent(block) {
  let kind = "", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!["kv", "set", "counter"].includes(kind)) return;
  const change = JSON.parse(data);
  // A value's timestamp holds its write time on the writer's clock (the top bits); a set or
  // counter change carries no write time, only when this node merged it.
  let lag = "-", title = "sets and counters carry no write time";
  if (kind === "kv") {
    const written = Number(BigInt(change.timestamp) >> BigInt(LOGICAL_BITS));
    lag = Math.max(0, change.applied_ms - written) + " ms";
    title = "from the write on " + change.node + "'s clock to this node's";
  }
  const row = el("tr", { "data-key": change.key },
    el("td", {}, kind + " " + change.key + (change.deleted ? " (deleted)" : "")),
    el("td", {}, change.node || "anti-entropy"), el("td", { title }, lag));
  const body = document.querySelector("#feed tbody");
  body.prepend(row);
  while (body.children.length > FEED_ROWS) body.lastChild.remove();
}

// The key browser: values (`/v1/kv`) or sets (`/v1/sets`), by prefix.
function keyspace() {
  return document.getElementById("keyspace").value;
}

function keyPath(name) {
  return "/v1/" + keyspace() + "/" + name.split("/").map(encodeURIComponent).join("/");
}

async function listKeys(event) {
  event.preventDefault();
  const prefix = document.getElementById("prefix").value;
  const page = await json("/v1/" + keyspace() + "?prefix=" + encodeURIComponent(prefix) + "&limit=100");
  const list = document.getElementById("keys");
  list.replaceChildren(...page.keys.map((name) => {
    const item = el("li", {}, el("button", { type: "button", "data-key": name }, name));
    item.firstChild.addEventListener("click", () => showKey(name));
    return item;
  }));
  setText(document.getElementById("keys-more"), page.keys.length ? (page.next ? "the first 100" : "")
    : "no key starts with this prefix");
}

function wallTime(hlc) {
  return new Date(Number(BigInt(hlc) >> BigInt(LOGICAL_BITS))).toISOString();
}

// `?explain=true` in words: the write held here and the concurrent ones it won over.
function explained(explain) {
  const write = (w) => w.node + " at " + wallTime(w.timestamp) +
    (w.deleted ? " (a delete)" : w.size == null ? "" : " (" + w.size + " bytes)");
  const lines = ["Conflicts (last writer wins, as seen here):", "  held: " + write(explain.winner)];
  for (const o of explain.overwritten) {
    lines.push("  overwritten: " + write(o) + ", by " + o.by.node + "'s write at " + wallTime(o.by.timestamp));
  }
  if (!explain.overwritten.length) lines.push("  no concurrent write lost here");
  return lines;
}

async function showKey(name) {
  const path = keyPath(name);
  const resp = await api(path);
  const value = await resp.text();
  const lines = [name, "ETag: " + (resp.headers.get("etag") || "-")];
  if (keyspace() === "kv") {
    const stamp = resp.headers.get("x-hearsay-timestamp");
    const expires = resp.headers.get("x-hearsay-expires");
    const left = expires ? Math.round((Number(expires) - Date.now()) / 1000) : 0;
    lines.push("Written: " + (stamp ? wallTime(stamp) + " by " + resp.headers.get("x-hearsay-node") : "-"));
    lines.push("Expires: " + (expires ? new Date(Number(expires)).toISOString() + " (in " + left + " s)" : "never"));
  }
  lines.push("", resp.ok ? value : resp.status + " " + value);
  if (keyspace() === "kv") {
    const explain = await api(path + "?explain=true").then((r) => r.ok ? r.json() : null);
    if (explain) lines.push("", ...explained(explain));
  }
  document.getElementById("key-detail").textContent = lines.join("\n");
}

// Writes (or deletes) a value on this node, as `curl -X PUT` would: the README's demo by clicks.
async function writeKey(method) {
  const name = document.getElementById("write-key").value;
  if (!name) return;
  const options = { method };
  if (method === "PUT") options.body = document.getElementById("write-value").value;
  const resp = await api("/v1/kv/" + name.split("/").map(encodeURIComponent).join("/"), options);
  const reply = await resp.json().catch(() => ({}));
  setText(document.getElementById("write-result"), resp.ok
    ? (method === "PUT" ? "written" : "deleted") + " at " + wallTime(reply.timestamp)
    : resp.status + " " + (reply.error || ""));
}

function start() {
  adoptLinkedToken();
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("hearsay-token", document.getElementById("token").value.trim());
    document.getElementById("token-form").hidden = true;
    boot();
  });
  document.getElementById("view-from").addEventListener("change", (event) => {
    const given = token();
    window.location = event.target.value + (given ? "#token=" + encodeURIComponent(given) : "");
  });
  document.getElementById("key-search").addEventListener("submit", listKeys);
  document.getElementById("key-write").addEventListener("submit", (event) => {
    event.preventDefault();
    writeKey("PUT");
  });
  document.querySelector("#key-write [data-action='delete']")
    .addEventListener("click", () => writeKey("DELETE"));
  document.getElementById("loss").addEventListener("change", async (event) => {
    const loss = Number(event.target.value);
    setText(document.getElementById("loss-value"), String(loss));
    const body = JSON.stringify({ drop: state.faults.drop, loss, delay_ms: state.faults.delay_ms });
    const resp = await api("/v1/admin/faults", { method: "PUT", body });
    if (resp.ok) state.faults = await resp.json();
  });
  boot();
}

// Starts (or, once a token is given, resumes) reading: one of each poll loop and one feed at
// most.
function boot() {
  follow();
  if (state.polling) return;
  state.polling = true;
  every(POLL_MS, pollMembers);
  every(POLL_MS, pollStatus);
  every(POLL_MS, pollStats);
}

document.addEventListener("DOMContentLoaded", start);
