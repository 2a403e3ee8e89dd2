/**
 * The dashboard page's script (an ES module run by the browser, served as /dashboard/app.js).
 * Written in plain modern JS without template literals, so that it can sit in String.raw here.
 * Charts are drawn on <canvas> by the few functions below: no library, nothing fetched elsewhere.
 * Event streams are read with fetch, not EventSource, because only fetch can send the API key.
 */
export const DASHBOARD_SCRIPT = String.raw`
const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "halo.apiKey";
const COLORS = ["#3b82f6", "#10b981", "#f59e0b", "#8b5cf6", "#ef4444", "#14b8a6", "#ec4899", "#84cc16", "#6366f1", "#a16207"];
const MAX_TOKENS_SHOWN = 120;
const state = { model: "", devices: [], placement: null, tokens: [], dropped: [], nTokensSeen: 0 };
let pending = new Set();

const deviceColor = (device) => COLORS[device % COLORS.length];
const fixed = (x, digits) => (x === null || x === undefined ? "–" : x.toFixed(digits));
const percent = (ratio) => (ratio * 100).toFixed(1) + " %";
const mebibytes = (bytes) => (bytes === null ? "–" : (bytes / 1048576).toFixed(0) + " MiB");

function authHeaders() {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { authorization: "Bearer " + key } : {};
}

function askKey() {
  const key = prompt("API key of this server (kept in this browser's localStorage; empty to forget it)");
  if (key === null) return false;
  if (key === "") localStorage.removeItem(KEY_STORAGE);
  else localStorage.setItem(KEY_STORAGE, key);
  return true;
}

/** Reads a text/event-stream response body, calling onEvent(name, data) per event. */
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length > 0) onEvent(name, data.join("\n"));
    }
  }
}

function setConnection(text, className) {
  const badge = $("connection");
  badge.textContent = text;
  badge.className = "badge " + className;
}

let asked = false;
async function connect() {
  setConnection("connecting", "");
  try {
    const response = await fetch("/dashboard/events", { headers: authHeaders(), cache: "no-store" });
    if (response.status === 401) {
      setConnection("API key needed", "down");
      // Ask once by ourselves; after that the button asks, so a cancelled prompt does not loop.
      if (!asked) {
        asked = true;
        if (askKey()) setTimeout(connect, 0);
      }
      return;
    }
    if (!response.ok) throw new Error("HTTP " + response.status);
    setConnection("live", "live");
    await readEvents(response, (name, data) => onDashboardEvent(name, JSON.parse(data)));
  } catch (error) {
    console.warn("dashboard stream:", error);
  }
  setConnection("reconnecting", "down");
  setTimeout(connect, 2000);
}

function pushBounded(list, item, max) {
  list.push(item);
  if (list.length > max) list.splice(0, list.length - max);
}

function onDashboardEvent(name, data) {
  if (name === "snapshot") {
    state.model = data.model;
    $("model").textContent = data.model + " · context " + data.contextLength;
    state.placement = data.placement;
    state.tokens = data.recentTokens;
    state.dropped = data.droppedHistory;
    renderStatus(data);
    render("placement", "tokens", "dropped");
  } else if (name === "status") {
    pushBounded(state.dropped, { at: data.at, droppedGroups: data.totals.droppedGroups }, 120);
    renderStatus(data);
    render("dropped");
  } else if (name === "placement") {
    state.placement = data;
    render("placement");
  } else if (name === "token") {
    state.nTokensSeen++;
    pushBounded(state.tokens, data, 240);
    render("tokens");
  }
}

/** Redraws at most once a frame, however fast tokens come. */
function render(...what) {
  if (pending.size === 0) requestAnimationFrame(() => {
    const now = pending;
    pending = new Set();
    if (now.has("placement")) renderPlacement();
    if (now.has("tokens")) renderTokens();
    if (now.has("dropped")) renderDropped();
  });
  for (const w of what) pending.add(w);
}

function fillTable(id, rows) {
  $(id).tBodies[0].replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (typeof cell === "object") {
        td.textContent = cell.text;
        if (cell.className) td.className = cell.className;
        if (cell.color) td.style.color = cell.color;
      } else td.textContent = String(cell);
      tr.append(td);
    }
    return tr;
  }));
}

function renderStatus(status) {
  state.devices = status.devices;
  fillTable("devices", status.devices.map((d) => [
    { text: "■ " + d.index, color: deviceColor(d.index) }, d.name, fixed(d.attentionGroupMs, 4), fixed(d.ffnGroupMs, 4), mebibytes(d.memoryBudgetBytes), { text: d.status, className: "status-" + d.status },
  ]));
  fillTable("links", status.links.map((l) => [
    l.worker, l.address, { text: l.state, className: "status-" + l.state }, percent(l.lossRatio), percent(l.lateRatio), fixed(l.rttMs, 2), fixed(l.jitterMs, 2),
  ]));
  $("no-links").hidden = status.links.length > 0;
  $("legend").replaceChildren(...status.devices.map((d) => {
    const span = document.createElement("span");
    span.textContent = "■ " + d.name;
    span.style.color = deviceColor(d.index);
    return span;
  }));
}

function drawGrid(canvas, rows) {
  const nCols = Math.max(1, ...rows.map((r) => r.length));
  const cellW = canvas.width / nCols;
  const cellH = Math.max(4, Math.min(16, cellW));
  canvas.height = Math.max(1, rows.length * cellH);
  const g = canvas.getContext("2d");
  const gap = cellW > 5 ? 1 : 0;
  rows.forEach((row, layer) => row.forEach((device, group) => {
    g.fillStyle = deviceColor(device);
    g.fillRect(group * cellW, layer * cellH, cellW - gap, cellH - gap);
  }));
}

function renderPlacement() {
  if (state.placement === null) return;
  drawGrid($("placement-attention"), state.placement.layers.map((l) => l.attention));
  drawGrid($("placement-ffn"), state.placement.layers.map((l) => l.ffn));
}

/** Bars from the left, oldest first; each bar is a stack of [value, colour] segments. */
function drawBars(canvas, bars, unit) {
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  g.clearRect(0, 0, width, height);
  const top = Math.max(1e-9, ...bars.map((b) => b.reduce((sum, [v]) => sum + v, 0))) * 1.1;
  const barW = width / Math.max(bars.length, 40);
  bars.forEach((stack, i) => {
    let y = height;
    for (const [value, color] of stack) {
      const h = (value / top) * (height - 14);
      g.fillStyle = color;
      g.fillRect(i * barW, y - h, Math.max(1, barW - 1), h);
      y -= h;
    }
  });
  g.fillStyle = "#6b7280";
  g.font = "11px system-ui, sans-serif";
  g.fillText("max " + (top / 1.1).toFixed(2) + " " + unit, 4, 11);
  canvas.dataset.samples = String(bars.length);
}

function renderTokens() {
  const shown = state.tokens.slice(-MAX_TOKENS_SHOWN);
  drawBars($("token-chart"), shown.map((t) => [[t.computeMs, "#3b82f6"], [t.syncWaitMs, "#f59e0b"]]), "ms");
  const last = shown[shown.length - 1];
  if (last === undefined) return;
  const decode = shown.filter((t) => t.index > 1);
  const mean = decode.reduce((s, t) => s + t.ms, 0) / Math.max(1, decode.length);
  $("token-summary").textContent = state.nTokensSeen + " tokens live · last " + last.ms.toFixed(2) + " ms (compute " + last.computeMs.toFixed(2) + " + sync " + last.syncWaitMs.toFixed(2) + ") · mean " + mean.toFixed(2) + " ms/token";
}

function renderDropped() {
  // Statuses come about once a second, but not exactly: turn each difference into a rate.
  const deltas = state.dropped.slice(1).map((s, i) => {
    const before = state.dropped[i];
    return Math.max(0, s.droppedGroups - before.droppedGroups) / Math.max(0.001, (s.at - before.at) / 1000);
  });
  drawBars($("dropped-chart"), deltas.map((d) => [[d, "#dc2626"]]), "groups/s");
  const total = state.dropped.length === 0 ? 0 : state.dropped[state.dropped.length - 1].droppedGroups;
  $("dropped-summary").textContent = total + " groups dropped since start";
}

const conversation = [];
function addLine(className, text) {
  const p = document.createElement("p");
  p.className = className;
  p.textContent = text;
  $("chat-log").append(p);
  return p;
}

async function modelId() {
  if (state.model) return state.model;
  const response = await fetch("/v1/models", { headers: authHeaders() });
  return (await response.json()).data[0].id;
}

async function sendChat(event) {
  event.preventDefault();
  const input = $("chat-input");
  const text = input.value.trim();
  if (text === "" || $("chat-send").disabled) return;
  input.value = "";
  $("chat-send").disabled = true;
  conversation.push({ role: "user", content: text });
  addLine("user", "you: " + text);
  const reply = addLine("assistant", "");
  let content = "";
  try {
    const body = JSON.stringify({ model: await modelId(), messages: conversation, stream: true, max_tokens: 64 });
    const response = await fetch("/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json", ...authHeaders() }, body });
    if (!response.ok) {
      const refusal = await response.json().catch(() => null);
      throw new Error(refusal && refusal.error ? refusal.error.message : "HTTP " + response.status);
    }
    await readEvents(response, (_name, data) => {
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta.content;
      if (delta) {
        content += delta;
        reply.textContent = content;
        $("chat-log").scrollTop = $("chat-log").scrollHeight;
      }
    });
    conversation.push({ role: "assistant", content });
    reply.dataset.done = "true";
  } catch (error) {
    conversation.pop();
    reply.className = "error";
    reply.textContent = "error: " + (error && error.message ? error.message : String(error));
  } finally {
    $("chat-send").disabled = false;
  }
}

$("chat-form").addEventListener("submit", sendChat);
$("set-key").addEventListener("click", () => {
  if (askKey()) location.reload();
});
connect();
`;
