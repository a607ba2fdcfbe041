// The cluster dashboard: reads this node's HTTP API (members, status, health, stats, watch) and
// draws it. No library, nothing fetched from anywhere but the node serving the page.
"use strict";

const COLORS = { alive: "#2e9d5b", suspect: "#e0a100", dead: "#d33b3b", left: "#8a8a8a" };
const FEED_ROWS = 50;
// An HLC timestamp is milliseconds shifted left by this many logical bits (src/clock.rs).
const LOGICAL_BITS = 16;
const state = { members: [], status: null, faults: null, isolated: new Set(), samples: [],
  following: false, polling: false };
// Points kept per series (one a second).
const SERIES_POINTS = 60;
// The series drawn: a per-second rate of a counter, or a level.
const SERIES = [
  { field: "rumors_received", label: "rumors received /s", rate: true },
  { field: "sync_keys_repaired", label: "keys repaired by anti-entropy /s", rate: true },
  { field: "conflicts", label: "conflicts /s", rate: true },
  { field: "tombstones_held", label: "tombstones held", rate: false },
];

function token() {
  return sessionStorage.getItem("hearsay-token");
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

function drawRing(members) {
  const ring = document.getElementById("ring");
  ring.replaceChildren();
  const n = members.length;
  const radius = n > 12 ? 130 : 100;
  const dot = n > 20 ? 6 : 14;
  members.forEach((m, i) => {
    const angle = (2 * Math.PI * i) / n - Math.PI / 2;
    const x = radius * Math.cos(angle), y = radius * Math.sin(angle);
    const circle = svg("circle", { cx: x, cy: y, r: dot, fill: COLORS[m.state] || "#000",
      "data-member": m.id, "data-state": m.state });
    circle.append(svg("title"));
    circle.firstChild.textContent = m.id + ": " + m.state + " (incarnation " + m.incarnation + ")";
    ring.append(circle);
    if (n <= 20) {
      const label = svg("text", { x: x * 1.28, y: y * 1.28 + 4, "text-anchor": "middle" });
      label.textContent = m.id;
      ring.append(label);
    }
  });
}

function drawMembers() {
  const body = document.querySelector("#members tbody");
  body.replaceChildren();
  const roots = {};
  for (const node of (state.status && state.status.nodes) || []) roots[node.id] = node;
  for (const m of state.members) {
    const digest = roots[m.id] || {};
    const row = el("tr", { "data-member": m.id, "data-state": m.state },
      el("td", {}, m.id), el("td", { class: "state " + m.state }, m.state),
      el("td", {}, String(m.incarnation)), el("td", {}, m.gossip_addr), el("td", {}, m.http_addr),
      el("td", {}, digest.keys == null ? "?" : String(digest.keys)),
      el("td", { class: "digest" }, digest.root ? digest.root.slice(0, 12) : "?"),
      el("td", {}, faultButton(m)));
    body.append(row);
  }
  drawRing(state.members);
}

function faultButton(m) {
  if (!state.faults) return "";
  const cut = state.isolated.has(m.id);
  const button = el("button", { "data-action": cut ? "heal" : "cut", "data-member": m.id },
    cut ? "heal" : "cut");
  button.addEventListener("click", () => setCut(m.id, !cut));
  return button;
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
    badge.textContent = "diverged, " + spread + " keys";
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

async function sample() {
  const stats = await json("/v1/cluster/stats");
  state.samples.push(stats);
  if (state.samples.length > SERIES_POINTS + 1) state.samples.shift();
  drawSeries();
}

async function refresh() {
  try {
    const [members, status, health] = await Promise.all([
      json("/v1/cluster/members"), json("/v1/cluster/status"), json("/v1/health")]);
    await sample();
    state.members = members.members;
    state.status = status;
    state.self = health.node;
    document.getElementById("node").textContent = health.node;
    document.getElementById("health").textContent = "this node: " + health.status +
      (health.reasons.length ? " (" + health.reasons.join(", ") + ")" : "");
    drawSelector();
    drawMembers();
    drawConvergence();
  } catch (e) {
    if (e.message !== "unauthorized") console.warn(e.message);
  }
}

function drawSelector() {
  const select = document.getElementById("view-from");
  const ids = state.members.map((m) => m.id).join(",");
  if (select.dataset.ids === ids) return;
  select.dataset.ids = ids;
  select.replaceChildren(...state.members.map((m) =>
    el("option", Object.assign({ value: "http://" + m.http_addr + "/ui" },
      m.id === state.self ? { selected: "" } : {}), m.id)));
}

async function loadFaults() {
  const resp = await api("/v1/admin/faults");
  if (!resp.ok) return;
  state.faults = await resp.json();
  document.getElementById("faults").hidden = false;
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
    await new Promise((r) => setTimeout(r, 1000));
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
  // The HLC timestamp's wall-clock part (its top bits), on the writer's clock; a set or counter
  // change carries this node's merge time instead, so its lag reads as about 0.
  const written = change.timestamp ? Number(BigInt(change.timestamp) >> BigInt(LOGICAL_BITS)) : null;
  const lag = written == null ? null : Date.now() - written;
  const row = el("tr", { "data-key": change.key },
    el("td", {}, kind + " " + change.key), el("td", {}, change.node || "?"),
    el("td", {}, lag == null ? "?" : Math.max(0, lag) + " ms"));
  const body = document.querySelector("#feed tbody");
  body.prepend(row);
  while (body.children.length > FEED_ROWS) body.lastChild.remove();
}

async function listKeys(event) {
  event.preventDefault();
  const prefix = document.getElementById("prefix").value;
  const page = await json("/v1/kv?prefix=" + encodeURIComponent(prefix) + "&limit=100");
  const list = document.getElementById("keys");
  list.replaceChildren(...page.keys.map((k) => {
    const name = typeof k === "string" ? k : k.key;
    const item = el("li", {}, el("button", { type: "button" }, name));
    item.firstChild.addEventListener("click", () => showKey(name));
    return item;
  }));
}

async function showKey(name) {
  const path = "/v1/kv/" + name.split("/").map(encodeURIComponent).join("/");
  const resp = await api(path);
  const value = await resp.text();
  const explain = await api(path + "?explain=true").then((r) => r.ok ? r.json() : null);
  document.getElementById("key-detail").textContent = [
    name, "ETag: " + (resp.headers.get("etag") || "-"),
    "Expires: " + (resp.headers.get("x-hearsay-expires") || "-"),
    "", value, "", explain ? JSON.stringify(explain, null, 2) : ""].join("\n");
}

function start() {
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("hearsay-token", document.getElementById("token").value.trim());
    document.getElementById("token-form").hidden = true;
    boot();
  });
  document.getElementById("view-from").addEventListener("change", (event) => {
    window.location = event.target.value;
  });
  document.getElementById("key-search").addEventListener("submit", listKeys);
  document.getElementById("loss").addEventListener("change", async (event) => {
    const loss = Number(event.target.value);
    document.getElementById("loss-value").textContent = String(loss);
    const body = JSON.stringify({ drop: state.faults.drop, loss, delay_ms: state.faults.delay_ms });
    const resp = await api("/v1/admin/faults", { method: "PUT", body });
    if (resp.ok) state.faults = await resp.json();
  });
  boot();
}

// Starts (or, once a token is given, resumes) reading: one poll loop and one feed at most.
function boot() {
  refresh();
  loadFaults().catch(() => {});
  follow();
  if (!state.polling) {
    state.polling = true;
    setInterval(refresh, 1000);
  }
}

document.addEventListener("DOMContentLoaded", start);
