// edgecore-dmi dashboard: renders GET api/v1/status, keeps charts from
// api/v1/history, and follows api/v1/events (Server-Sent Events). While the
// event stream is down it fetches the status every 2 s instead.
//
// Every value shown is also in a data-* attribute (data-device, data-state,
// data-property, data-reported, data-desired, data-age-ms, data-problem,
// data-points), for tests and scripts.
"use strict";

const POLL_MS = 2000;
const STREAM_RETRY_MS = 10000;
const HISTORY_CONCURRENCY = 4;
const MIN_SPAN_MS = 60000;
const SVG = "http://www.w3.org/2000/svg";

const page = {
  status: null, // the latest StatusView
  statusAt: 0, // Date.now() when it arrived
  clockOffset: 0, // server clock minus ours, ms
  windowMs: 600000,
  maxPoints: 600,
  series: new Map(), // "ns/name\u0000property" -> [[t, v], ...]
  devices: new Map(), // "ns/name" -> DOM of the device card
  stream: null,
  pollTimer: null,
  retryTimer: null,
  drawQueued: false,
};
window.__dashboard = page;

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function setText(e, text) {
  if (e.textContent !== text) e.textContent = text;
}

function setData(e, key, value) {
  const v = value == null ? "" : String(value);
  if (e.dataset[key] !== v) e.dataset[key] = v;
}

function seriesKey(device, property) {
  return device + "\u0000" + property;
}

function serverNow() {
  return Date.now() + page.clockOffset;
}

function syncClock(serverMs) {
  if (typeof serverMs === "number") page.clockOffset = serverMs - Date.now();
}

function formatAge(ms) {
  if (ms == null) return "-";
  if (ms < 10000) return (ms / 1000).toFixed(1) + "s";
  if (ms < 120000) return Math.floor(ms / 1000) + "s";
  if (ms < 7200000) return Math.floor(ms / 60000) + "m";
  return Math.floor(ms / 3600000) + "h";
}

function formatValue(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return String(Math.round(v * 1000) / 1000);
}

// --- status -----------------------------------------------------------------

function deviceId(d) {
  return d.namespace + "/" + d.name;
}

// Problems of a device as `edgecore-dmi devices` lists them.
function problemsOf(d) {
  const out = [];
  for (const p of d.properties) {
    if (p.error) out.push(p.name + ": " + p.error);
    if (p.sink_error) out.push(p.name + ": sink: " + p.sink_error);
    if (p.desired_reason) out.push(p.name + ": desired value rejected: " + p.desired_reason);
  }
  return out.concat(d.errors);
}

function stateKind(state) {
  if (state === "online" || state === "ok") return "good";
  if (state === "offline" || state === "unhealthy") return "bad";
  return "none";
}

function applyStatus(view) {
  page.status = view;
  page.statusAt = Date.now();
  $("#failure").hidden = true;

  const online = view.devices.filter((d) => stateKind(d.state) === "good").length;
  const problems = view.devices.reduce((n, d) => n + problemsOf(d).length, 0);
  setText(
    $("#summary"),
    `${view.devices.length} device${view.devices.length === 1 ? "" : "s"}, ${online} online, ` +
      `${view.mappers.length} mapper${view.mappers.length === 1 ? "" : "s"}` +
      (problems ? `, ${problems} problem${problems === 1 ? "" : "s"}` : ""),
  );

  const mappers = $("#mappers");
  mappers.hidden = view.mappers.length === 0;
  mappers.querySelector("ul").replaceChildren(
    ...view.mappers.map((m) => {
      const li = el("li", { "data-mapper": m.name });
      li.textContent =
        `${m.name} (${m.protocol}) at ${m.address}: ${m.devices} device${m.devices === 1 ? "" : "s"}` +
        (m.last_error ? `, unreachable: ${m.last_error}` : "");
      if (m.last_error) li.className = "unreachable";
      return li;
    }),
  );

  const sources = $("#source-errors");
  sources.hidden = view.source_errors.length === 0;
  sources.querySelector("ul").replaceChildren(
    ...view.source_errors.map((e) => {
      const li = el("li", { "data-source-error": e });
      li.textContent = e;
      return li;
    }),
  );

  const list = $("#devices");
  const seen = new Set();
  view.devices.forEach((d, i) => {
    const id = deviceId(d);
    seen.add(id);
    let card = page.devices.get(id);
    if (!card) {
      card = makeDevice(id);
      page.devices.set(id, card);
      loadHistory(id);
    }
    updateDevice(card, d);
    if (list.children[i] !== card.root) list.insertBefore(card.root, list.children[i] || null);
  });
  for (const [id, card] of page.devices) {
    if (!seen.has(id)) {
      card.root.remove();
      page.devices.delete(id);
      for (const k of page.series.keys()) if (k.startsWith(id + "\u0000")) page.series.delete(k);
    }
  }
  $("#empty").hidden = view.devices.length !== 0;
  tickAges();
  queueDraw();
}

function makeDevice(id) {
  const title = el("h2", {});
  title.textContent = id;
  const state = el("span", { class: "state" });
  const seen = el("span", { class: "seen" });
  const meta = el("span", { class: "meta" });
  const problems = el("ul", { class: "problems" });
  const body = el("tbody", {});
  const table = el(
    "table",
    { class: "props" },
    el(
      "colgroup",
      {},
      el("col", { class: "name" }),
      el("col", { class: "desired" }),
      el("col", { class: "reported" }),
      el("col", { class: "age" }),
      el("col", { class: "chart" }),
    ),
    el(
      "thead",
      {},
      el("tr", {}, ...["property", "desired", "reported", "age", "recent"].map((h) => {
        const th = el("th", {});
        th.textContent = h;
        return th;
      })),
    ),
    body,
  );
  const root = el(
    "article",
    { class: "device", "data-device": id },
    el("header", {}, title, state, seen, meta),
    problems,
    table,
  );
  return { id, root, state, seen, meta, problems, table, body, rows: new Map() };
}

function updateDevice(card, d) {
  card.view = d;
  setData(card.root, "state", d.state || "");
  setText(card.state, d.state || "no state");
  card.state.dataset.kind = stateKind(d.state);
  const mappers = d.mappers.length ? d.mappers.join(", ") : "no mapper";
  setText(card.meta, `model ${d.model || "-"} · ${d.protocol || "-"} · ${mappers}`);
  card.seen.title = d.last_online ? "last online " + d.last_online : "";

  const problems = problemsOf(d);
  if (card.problems.childElementCount !== problems.length ||
      problems.some((p, i) => card.problems.children[i].dataset.problem !== p)) {
    card.problems.replaceChildren(
      ...problems.map((p) => {
        const li = el("li", { "data-problem": p });
        li.textContent = p;
        return li;
      }),
    );
  }

  card.table.hidden = d.properties.length === 0;
  const seen = new Set();
  d.properties.forEach((p, i) => {
    seen.add(p.name);
    let row = card.rows.get(p.name);
    if (!row) {
      row = makeRow(card.id, p.name);
      card.rows.set(p.name, row);
    }
    updateRow(row, p);
    if (card.body.children[i] !== row.tr) card.body.insertBefore(row.tr, card.body.children[i] || null);
  });
  for (const [name, row] of card.rows) {
    if (!seen.has(name)) {
      row.tr.remove();
      card.rows.delete(name);
    }
  }
}

function makeRow(device, name) {
  const cells = {
    name: el("td", { class: "name" }),
    desired: el("td", { class: "desired" }),
    reported: el("td", { class: "reported" }),
    age: el("td", { class: "age" }),
    chart: el("td", { class: "chart" }),
  };
  cells.name.textContent = name;
  const tr = el("tr", { "data-property": name }, ...Object.values(cells));
  return { device, name, tr, cells, drawn: "" };
}

function updateRow(row, p) {
  row.view = p;
  const tr = row.tr;
  setData(tr, "desired", p.desired || "");
  setData(tr, "desiredStatus", p.desired ? p.desired_status || "" : "");
  setData(tr, "reported", p.reported || "");
  setData(tr, "problemCount", [p.error, p.sink_error, p.desired_reason].filter(Boolean).length);

  const desired = row.cells.desired;
  if (!p.desired) {
    setText(desired, "-");
  } else {
    const status = p.desired_status || "sent";
    if (desired.dataset.shown !== p.desired + "\u0000" + status) {
      desired.dataset.shown = p.desired + "\u0000" + status;
      const s = el("span", { class: "status", "data-status": status });
      s.textContent = "(" + status + ")";
      desired.replaceChildren(p.desired, s);
    }
  }
  desired.title = p.desired_reason || "";
  setText(row.cells.reported, p.reported || "-");
  row.cells.reported.title = p.reported || "";
}

// Ages move on between status updates.
function tickAges() {
  if (!page.status) return;
  const since = Date.now() - page.statusAt;
  for (const card of page.devices.values()) {
    let newest = null;
    for (const row of card.rows.values()) {
      const p = row.view;
      const age = p && p.age_ms != null ? p.age_ms + since : null;
      setData(row.tr, "ageMs", age == null ? "" : Math.round(age));
      setText(row.cells.age, formatAge(age));
      if (age != null && (newest == null || age < newest)) newest = age;
    }
    setData(card.root, "lastSeenMs", newest == null ? "" : Math.round(newest));
    setText(card.seen, newest == null ? "never reported" : "last report " + formatAge(newest) + " ago");
  }
}

// --- history and charts -------------------------------------------------------

function trim(points) {
  const oldest = serverNow() - page.windowMs;
  let drop = 0;
  while (drop < points.length && points[drop][0] < oldest) drop++;
  if (points.length - drop > page.maxPoints) drop = points.length - page.maxPoints;
  if (drop) points.splice(0, drop);
}

function addPoint(device, property, t, v) {
  const key = seriesKey(device, property);
  let points = page.series.get(key);
  if (!points) {
    points = [];
    page.series.set(key, points);
  }
  const last = points[points.length - 1];
  if (last && t <= last[0]) return; // already have it (or older)
  points.push([t, v]);
  trim(points);
}

// Fetches the history of one device; points that arrived through the event
// stream meanwhile are kept.
const historyQueue = [];
let historyRunning = 0;

function loadHistory(device) {
  if (!historyQueue.includes(device)) historyQueue.push(device);
  pumpHistory();
}

function loadAllHistory() {
  for (const id of page.devices.keys()) loadHistory(id);
}

function pumpHistory() {
  while (historyRunning < HISTORY_CONCURRENCY && historyQueue.length) {
    const device = historyQueue.shift();
    historyRunning++;
    fetch("api/v1/history?device=" + encodeURIComponent(device), { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : null))
      .then((h) => {
        if (!h) return;
        syncClock(h.now_ms);
        page.windowMs = h.window_ms || page.windowMs;
        page.maxPoints = h.max_points || page.maxPoints;
        for (const s of h.series) {
          const key = seriesKey(device, s.property);
          const fetched = s.points.map((p) => [p[0], p[1]]);
          const lastT = fetched.length ? fetched[fetched.length - 1][0] : -Infinity;
          const newer = (page.series.get(key) || []).filter((p) => p[0] > lastT);
          const merged = fetched.concat(newer);
          trim(merged);
          page.series.set(key, merged);
        }
        queueDraw();
      })
      .catch(() => {})
      .finally(() => {
        historyRunning--;
        pumpHistory();
      });
  }
}

// While polling, the status's reported values are the only new points.
function pointsFromStatus(view) {
  const now = serverNow();
  for (const d of view.devices) {
    for (const p of d.properties) {
      if (p.reported == null || p.age_ms == null) continue;
      const v = Number(p.reported);
      if (p.reported.trim() === "" || !Number.isFinite(v)) continue;
      addPoint(deviceId(d), p.name, now - p.age_ms, v);
    }
  }
}

function queueDraw() {
  if (page.drawQueued) return;
  page.drawQueued = true;
  requestAnimationFrame(() => {
    page.drawQueued = false;
    drawCharts();
  });
}

function drawCharts() {
  const now = serverNow();
  for (const card of page.devices.values()) {
    for (const row of card.rows.values()) {
      drawChart(row, page.series.get(seriesKey(card.id, row.name)) || [], now);
    }
  }
}

function drawChart(row, points, now) {
  const cell = row.cells.chart;
  const width = Math.max(60, Math.floor(cell.clientWidth - 8) || 180);
  const height = 30;
  const first = points.length ? points[0][0] : now;
  const last = points.length ? points[points.length - 1][0] : now;
  // Redraw only when something changed: new points, the size, or a second
  // passed (the time axis moves).
  const span = Math.min(page.windowMs, Math.max(MIN_SPAN_MS, now - first));
  const start = now - span;
  const stamp = `${points.length}:${last}:${width}:${Math.floor(now / 1000)}`;
  if (row.drawn === stamp) return;
  row.drawn = stamp;
  if (points.length === 0) {
    const none = el("span", { class: "none", "data-points": "0" });
    none.textContent = row.view && row.view.reported != null ? "not numeric" : "";
    cell.replaceChildren(none);
    return;
  }
  let lo = Infinity;
  let hi = -Infinity;
  for (const p of points) {
    if (p[1] < lo) lo = p[1];
    if (p[1] > hi) hi = p[1];
  }
  const pad = hi === lo ? Math.max(1, Math.abs(hi) * 0.05) : (hi - lo) * 0.1;
  const y0 = lo - pad;
  const y1 = hi + pad;
  const labelW = 44;
  const plotW = width - labelW;
  const x = (t) => labelW + ((t - start) / span) * plotW;
  const y = (v) => height - 2 - ((v - y0) / (y1 - y0)) * (height - 4);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("role", "img");
  svg.dataset.points = String(points.length);
  const title = document.createElementNS(SVG, "title");
  title.textContent =
    `${points.length} value${points.length === 1 ? "" : "s"} over the last ${formatAge(span)}: ` +
    `min ${formatValue(lo)}, max ${formatValue(hi)}`;
  svg.append(title);
  for (const [v, yy] of [[hi, 9], [lo, height - 2]]) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", "0");
    t.setAttribute("y", String(yy));
    t.textContent = formatValue(v);
    svg.append(t);
  }
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute(
    "points",
    points
      .filter((p) => p[0] >= start)
      .map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`)
      .join(" "),
  );
  svg.append(line);
  const dot = document.createElementNS(SVG, "circle");
  const lp = points[points.length - 1];
  dot.setAttribute("cx", x(lp[0]).toFixed(1));
  dot.setAttribute("cy", y(lp[1]).toFixed(1));
  dot.setAttribute("r", "2");
  svg.append(dot);
  cell.replaceChildren(svg);
}

// --- updates: event stream, polling as the fallback ---------------------------------

function setMode(mode, text) {
  const c = $("#conn");
  c.dataset.mode = mode;
  setText(c, text || mode);
}

function startStream() {
  if (page.stream || typeof EventSource === "undefined") return;
  const es = new EventSource("api/v1/events");
  page.stream = es;
  es.addEventListener("open", () => {
    setMode("live");
    stopPolling();
    // Points may have been missed while the stream was down.
    loadAllHistory();
  });
  es.addEventListener("status", (e) => applyStatus(JSON.parse(e.data)));
  es.addEventListener("samples", (e) => {
    const s = JSON.parse(e.data);
    syncClock(s.now_ms);
    for (const p of s.points) addPoint(p.device, p.property, p.t, p.v);
    if (s.truncated) loadAllHistory();
    queueDraw();
  });
  es.addEventListener("resync", () => loadAllHistory());
  es.addEventListener("error", () => {
    // The browser retries by itself unless the stream is closed for good
    // (an error answer, such as 503 when too many streams are open).
    if (es.readyState === EventSource.CLOSED) {
      es.close();
      page.stream = null;
      clearTimeout(page.retryTimer);
      page.retryTimer = setTimeout(startStream, STREAM_RETRY_MS);
    }
    startPolling();
  });
}

function startPolling() {
  setMode("polling", "polling every " + POLL_MS / 1000 + "s");
  if (page.pollTimer) return;
  page.pollTimer = setInterval(poll, POLL_MS);
  poll();
}

function stopPolling() {
  clearInterval(page.pollTimer);
  page.pollTimer = null;
}

function poll() {
  fetch("api/v1/status", { cache: "no-store" })
    .then((r) => {
      if (!r.ok) throw new Error("status " + r.status);
      return r.json();
    })
    .then((view) => {
      if (page.stream && page.stream.readyState === EventSource.OPEN) return;
      applyStatus(view);
      if (page.pollTimer) {
        pointsFromStatus(view);
        setMode("polling", "polling every " + POLL_MS / 1000 + "s");
      }
    })
    .catch((e) => {
      setMode("offline", "edgecore-dmi unreachable");
      const f = $("#failure");
      f.textContent = "Cannot reach edgecore-dmi (" + e.message + "); retrying.";
      f.hidden = false;
    });
}

function start() {
  setInterval(() => {
    tickAges();
    queueDraw();
  }, 1000);
  window.addEventListener("resize", queueDraw);
  if (typeof EventSource === "undefined") {
    startPolling();
  } else {
    startStream();
  }
  // The first status comes from the stream; fetch it too, so the page fills
  // in even if the stream is slow to open or refused.
  poll();
}

start();
