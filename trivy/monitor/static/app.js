// trivy monitor page: every bus string is shown with textContent, never as HTML.
"use strict";

const state = {
  agents: new Map(), kinds: new Map(), rates: new Map(), clock: [0, 0], lastLine: 0, lastEvent: 0,
};
const rateCells = new Map(); // agent name -> its rate cell
const tailLimit = 500;
const series = new Map(); // "kind#field" -> {kind, field, points: [[epoch, value]]}
const seriesLimit = 3000;
let chart = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function epoch(t) { return state.clock[1] - (state.clock[0] - t); } // monotonic -> wall seconds

function colour(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h}, 60%, 35%)`;
}

async function post(action, body) {
  const response = await fetch(`/api/${action}`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  return response.json();
}

// ------------------------------------------------------------------ agents
function renderAgents() {
  const body = document.querySelector("#agents tbody");
  body.replaceChildren();
  rateCells.clear();
  const agents = [...state.agents.values()].sort((a, b) => a.name.localeCompare(b.name));
  for (const agent of agents) {
    const row = el("tr");
    row.dataset.agent = agent.name;
    const name = el("td", agent.name, agent.congested ? "congested" : "");
    name.style.color = colour(agent.name);
    if (agent.ready) name.append(el("div", `ready: ${agent.ready}`, "ready"));
    row.append(name, el("td", agent.host));
    row.append(el("td", new Date(epoch(agent.since) * 1000).toLocaleTimeString()));
    const rate = el("td", String(state.rates.get(agent.name) || 0), "num rate");
    rateCells.set(agent.name, rate);
    const plotRate = el("button", "plot", "field");
    plotRate.type = "button";
    plotRate.dataset.series = `rate:${agent.name}#1`;
    plotRate.onclick = () => toggleSeries(`rate:${agent.name}`, 1);
    rate.append(" ", plotRate);
    row.append(rate);
    const subs = el("ul", undefined, "subs");
    for (const [id, regexp] of agent.subscriptions) subs.append(el("li", `${id}: ${regexp}`));
    if (agent.more_subscriptions > 0) subs.append(el("li", `and ${agent.more_subscriptions} more`, "more"));
    for (const error of agent.errors) subs.append(el("li", `ERROR ${error}`, "congested"));
    const cell = el("td");
    cell.append(subs);
    row.append(cell);
    const actions = el("td");
    const ping = el("button", "ping");
    ping.type = "button";
    ping.className = "ping";
    ping.onclick = async () => {
      const answer = await post("ping", { agent: agent.key });
      ping.textContent = answer.round_trip_ms !== undefined ? `${answer.round_trip_ms} ms` : "no answer";
    };
    const direct = el("button", "direct");
    direct.type = "button";
    direct.onclick = async () => {
      const text = window.prompt(`Direct message to ${agent.name}:`);
      if (text) await post("direct", { agent: agent.key, num_id: 0, text });
    };
    const die = el("button", "DIE");
    die.type = "button";
    die.className = "die";
    die.onclick = async () => {
      if (window.confirm(`Send DIE to ${agent.name}? It will leave the bus.`)) {
        await post("die", { agent: agent.key, confirm: true });
      }
    };
    actions.append(ping, direct, die);
    row.append(actions);
    body.append(row);
  }
}

// ------------------------------------------------------------------- kinds
// Rows are updated in place, never rebuilt: a button under the mouse stays.
const kindRows = new Map(); // kind -> {row, cells, numeric}

function fieldButtons(kind) {
  const cell = el("td");
  for (const field of kind.numeric) {
    const key = `${kind.kind}#${field}`;
    const label = kind.fields ? kind.fields[field - 1] : `#${field}`;
    const button = el("button", label, series.has(key) ? "field on" : "field");
    button.type = "button";
    button.dataset.series = key;
    button.onclick = () => toggleSeries(kind.kind, field);
    cell.append(button);
  }
  return cell;
}

function renderKind(kind) {
  let entry = kindRows.get(kind.kind);
  if (!entry) {
    const row = el("tr");
    row.dataset.kind = kind.kind;
    const cells = [el("td", kind.kind), el("td", "", "num"), el("td", "", "num"), el("td"),
                   el("td"), el("td", "", "last")];
    row.append(...cells);
    document.querySelector("#kinds tbody").append(row);
    entry = { row, cells, numeric: "" };
    kindRows.set(kind.kind, entry);
  }
  const [, count, rate, senders, , last] = entry.cells;
  count.textContent = String(kind.count);
  rate.textContent = String(kind.rate);
  senders.textContent = kind.senders.join(", ");
  last.textContent = kind.last;
  if (entry.numeric !== kind.numeric.join()) {
    entry.numeric = kind.numeric.join();
    const cell = fieldButtons(kind);
    entry.row.replaceChild(cell, entry.cells[4]);
    entry.cells[4] = cell;
  }
}

function markSeriesButtons() {
  for (const button of document.querySelectorAll("button.field")) {
    button.className = series.has(button.dataset.series) ? "field on" : "field";
  }
}

// -------------------------------------------------------------------- plot
async function toggleSeries(kind, field) {
  const key = `${kind}#${field}`;
  if (series.has(key)) {
    series.delete(key);
  } else {
    const response = await fetch(`/api/window?kind=${encodeURIComponent(kind)}`);
    const window_ = await response.json();
    const points = window_.filter((p) => p[field] !== null).map((p) => [epoch(p[0]), p[field]]);
    series.set(key, { kind, field, points });
  }
  rebuildChart();
  markSeriesButtons();
}

async function reloadSeries() {
  // after a snapshot (the page reconnected, or was behind): the points of the
  // updates it missed come from the windows, those that came since are kept
  for (const [key, s] of [...series]) {
    const response = await fetch(`/api/window?kind=${encodeURIComponent(s.kind)}`);
    const window_ = await response.json();
    if (series.get(key) !== s) continue; // (removed meanwhile)
    const points = window_.filter((p) => p[s.field] !== null).map((p) => [epoch(p[0]), p[s.field]]);
    const last = points.length ? points[points.length - 1][0] : -Infinity;
    s.points = points.concat(s.points.filter(([t]) => t > last));
  }
  rebuildChart();
}

function addPoints(points) {
  for (const s of series.values()) {
    for (const p of points[s.kind] || []) {
      if (p[s.field] !== null && p[s.field] !== undefined) s.points.push([epoch(p[0]), p[s.field]]);
    }
    if (s.points.length > seriesLimit) s.points.splice(0, s.points.length - seriesLimit);
  }
}

function chartData() {
  const minutes = Number(document.getElementById("minutes").value);
  const since = Date.now() / 1000 - minutes * 60;
  const times = new Set();
  const all = [...series.values()];
  for (const s of all) for (const [t] of s.points) if (t >= since) times.add(t);
  const xs = [...times].sort((a, b) => a - b);
  const index = new Map(xs.map((t, i) => [t, i]));
  const ys = all.map((s) => {
    const column = new Array(xs.length).fill(null);
    for (const [t, v] of s.points) if (index.has(t)) column[index.get(t)] = v;
    return column;
  });
  return [xs, ...ys];
}

function seriesLabel(s) {
  const fields = (state.kinds.get(s.kind) || {}).fields;
  return fields ? `${s.kind}.${fields[s.field - 1]}` : `${s.kind}#${s.field}`;
}

function rebuildChart() {
  const target = document.getElementById("plot");
  if (chart) { chart.destroy(); chart = null; }
  target.replaceChildren();
  if (!series.size) return;
  const lines = [...series.values()].map((s) => ({
    label: seriesLabel(s), stroke: colour(`${s.kind}#${s.field}`), spanGaps: true,
  }));
  chart = new uPlot({ width: target.clientWidth || 800, height: 260, series: [{}, ...lines] },
                    chartData(), target);
}

function redrawChart() {
  if (chart && !document.getElementById("plot-pause").checked) chart.setData(chartData());
}

// -------------------------------------------------------------------- tail
function addTail(lines) {
  if (document.getElementById("tail-pause").checked) return;
  const tail = document.getElementById("tail");
  let filter = null;
  try { filter = new RegExp(document.getElementById("filter").value); } catch (e) { filter = null; }
  for (const [number, t, sender, text] of lines) {
    if (number <= state.lastLine) continue; // (the snapshot had it)
    state.lastLine = number;
    if (filter && !filter.test(text)) continue;
    const line = el("li", `${new Date(epoch(t) * 1000).toLocaleTimeString()} ${sender}: ${text}`);
    line.style.color = colour(sender);
    tail.append(line);
  }
  while (tail.childElementCount > tailLimit) tail.firstElementChild.remove();
}

// -------------------------------------------------------------------- feed
function apply(message) {
  if (message.type === "dropped") { // (the snapshot that follows it has everything)
    document.getElementById("dropped").textContent = `${message.dropped} updates dropped (this page was behind)`;
    return;
  }
  state.clock = message.clock;
  const agentsChanged = message.type === "snapshot" || message.agents.length || (message.gone || []).length;
  if (message.type === "snapshot") {
    state.agents.clear();
    state.kinds.clear();
    kindRows.clear();
    state.lastLine = 0;
    state.lastEvent = 0;
    document.getElementById("events").replaceChildren();
    document.querySelector("#kinds tbody").replaceChildren();
    document.getElementById("tail").replaceChildren();
  }
  for (const agent of message.agents) state.agents.set(agent.key, agent);
  for (const key of message.gone || []) state.agents.delete(key);
  for (const kind of message.kinds) {
    state.kinds.set(kind.kind, kind);
    renderKind(kind);
  }
  document.getElementById("texts").textContent = `${message.texts} texts`;
  const events = document.getElementById("events");
  for (const [number, line] of message.events) {
    if (number <= state.lastEvent) continue; // (the snapshot had it)
    state.lastEvent = number;
    events.append(el("li", line));
  }
  while (events.childElementCount > 50) events.firstElementChild.remove();
  addTail(message.tail);
  if (message.points) addPoints(message.points);
  for (const [name, rate] of Object.entries(message.rates || {})) {
    state.rates.set(name, rate);
    const cell = rateCells.get(name);
    if (cell) cell.firstChild.textContent = String(rate);
  }
  if (agentsChanged) { renderAgents(); markSeriesButtons(); }
  redrawChart();
  if (message.type === "snapshot" && series.size) reloadSeries();
}

function connect() {
  const source = new EventSource("/api/events");
  const status = document.getElementById("status");
  source.onopen = () => { status.textContent = "live"; };
  source.onerror = () => { status.textContent = "reconnecting…"; };
  source.onmessage = (event) => apply(JSON.parse(event.data));
}

document.getElementById("send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("send-text");
  const answer = await post("send", { text: input.value });
  document.getElementById("send-result").textContent =
    answer.error ? answer.error : `sent to ${answer.sent_to} agent(s)`;
});
document.getElementById("plot-clear").onclick = () => { series.clear(); rebuildChart(); markSeriesButtons(); };
document.getElementById("minutes").onchange = redrawChart;
connect();
