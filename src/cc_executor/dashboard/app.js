// cc_executor dashboard: opens /dashboard/feed and draws each snapshot it sends.
// The page holds no data; the token (when the service needs one) comes from the URL fragment
// (#token=...), which browsers never send to a server, or from the form, and is kept in this
// tab's sessionStorage only. Everything from the feed is written with textContent, never as HTML.
"use strict";

const FEED = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/dashboard/feed";
const MAX_RETRIES = 600;  // about ten minutes of a service that is away, then stop and say so
const KEY = "cc_executor.token";
let retries = 0;

function takeToken() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);  // out of history
  }
  return sessionStorage.getItem(KEY) || "";
}

const $ = (id) => document.getElementById(id);

function setStatus(cls, text) {
  const el = $("status");
  el.className = "status " + cls;
  el.textContent = text;
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " m " + Math.floor(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " m";
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n.toFixed(0)) + " " + units[i];
}

function fmtPercent(r) { return r === null || r === undefined ? "n/a" : (r * 100).toFixed(1) + " %"; }

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function fillRows(tbody, rows, columns, emptyText) {
  tbody.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    cell(tr, emptyText).colSpan = columns;
    tbody.appendChild(tr);
    return;
  }
  for (const r of rows) tbody.appendChild(r);
}

function bar(label, ratio, text) {
  const wrap = document.createElement("div");
  wrap.className = "meter";
  const name = document.createElement("span");
  name.className = "meter-label";
  name.textContent = label;
  const track = document.createElement("span");
  track.className = "meter-track";
  const fill = document.createElement("span");
  const r = Math.max(0, Math.min(1, ratio || 0));
  fill.className = "meter-fill" + (r > 0.8 ? " hot" : r > 0.5 ? " warm" : "");
  fill.style.width = (r * 100).toFixed(1) + "%";
  track.appendChild(fill);
  const value = document.createElement("span");
  value.className = "meter-value";
  value.textContent = text;
  wrap.append(name, track, value);
  return wrap;
}

function drawHost(h) {
  const box = $("host");
  if (!h) { box.replaceChildren(); return; }
  const memUsed = h.mem_total ? 1 - h.mem_available / h.mem_total : 0;
  box.replaceChildren(
    bar("load 1m", h.load1 / Math.max(1, h.cores), h.load1.toFixed(2) + " on " + h.cores + " cores"),
    bar("load 5m", h.load5 / Math.max(1, h.cores), h.load5.toFixed(2)),
    bar("memory", memUsed, fmtBytes(h.mem_available) + " free of " + fmtBytes(h.mem_total)),
    bar("CPU pressure", h.cpu_pressure, fmtPercent(h.cpu_pressure)),
    bar("memory pressure", h.memory_pressure, fmtPercent(h.memory_pressure)),
    bar("IO pressure", h.io_pressure, fmtPercent(h.io_pressure)),
  );
}

function drawJobs(snap) {
  const rows = snap.jobs.map((j) => {
    const tr = document.createElement("tr");
    tr.dataset.jobId = j.job_id;
    cell(tr, j.job_id, "mono");
    cell(tr, j.state + (j.position ? " #" + j.position : ""), "state " + j.state);
    cell(tr, j.argv_head, "mono cmd");
    cell(tr, fmtSeconds(j.elapsed), "num");
    cell(tr, fmtBytes(j.bytes), "num");
    return tr;
  });
  fillRows($("jobs"), rows, 5, "no running or queued jobs");
  const total = snap.counts.running + snap.counts.queued;
  $("jobs-note").textContent = total > snap.jobs_shown ? "(first " + snap.jobs_shown + " of " + total + ")" : "";
}

function drawAdmission(snap) {
  const a = snap.admission || {};
  const parts = ["rule: " + (a.rule || "–")];
  if (a.window !== undefined) parts.push("slow-start window " + a.window);
  if (a.last_decision) {
    const d = a.last_decision;
    parts.push("last: " + (d.may_start ? "admitted" : "held") + (d.reason ? " (" + d.reason + ")" : ""));
  }
  $("admission").textContent = parts.join(" · ");
  const list = $("decisions");
  list.replaceChildren();
  for (const d of snap.decisions.slice(0, 8)) {
    const li = document.createElement("li");
    li.className = d.held ? "held" : "admitted";
    li.textContent = new Date(d.at * 1000).toLocaleTimeString() + "  " + d.job_id + "  " +
      (d.held ? "held" + (d.signal ? " by " + d.signal : "") : "admitted") + ": " + d.reason;
    list.appendChild(li);
  }
}

function drawCompletions(snap) {
  const rows = snap.completions.map((c) => {
    const tr = document.createElement("tr");
    cell(tr, c.job_id, "mono");
    cell(tr, c.argv_head, "mono cmd");
    cell(tr, c.reason, "reason " + c.reason);
    cell(tr, c.exit_code === null ? "–" : String(c.exit_code), "num");
    cell(tr, fmtSeconds(c.wait), "num");
    cell(tr, c.duration === null ? "–" : fmtSeconds(c.duration), "num");
    cell(tr, fmtBytes(c.bytes), "num");
    cell(tr, new Date(c.ended_at * 1000).toLocaleTimeString());
    return tr;
  });
  fillRows($("completions"), rows, 8, "none yet");
}

function draw(snap) {
  $("version").textContent = "v" + snap.version;
  const model = $("model");
  model.hidden = snap.model !== "simulated";
  model.textContent = "model: simulated";
  for (const k of ["running", "queued", "detached", "connections"]) $("count-" + k).textContent = snap.counts[k];
  $("uptime").textContent = fmtSeconds(snap.uptime);
  drawHost(snap.host);
  drawJobs(snap);
  drawAdmission(snap);
  drawCompletions(snap);
}

function askForToken(message) {
  $("token-form").hidden = false;
  $("token-error").textContent = message || "";
  setStatus("refused", "not connected");
}

function connect() {
  const token = takeToken();
  const ws = new WebSocket(FEED, token ? ["bearer." + token] : []);
  let opened = false;
  ws.onopen = () => {
    opened = true;
    retries = 0;
    $("token-form").hidden = true;
    setStatus("live", "live");
  };
  ws.onmessage = (ev) => {
    let snap;
    try { snap = JSON.parse(ev.data); } catch (e) { return; }
    if (snap && snap.type === "snapshot") draw(snap);
  };
  ws.onclose = () => {
    if (!opened) {
      // Refused (the status is hidden from pages) or unreachable: a missing or wrong token, or
      // an origin the service does not allow. Ask; retrying the same token would not help.
      askForToken(token ? "The service refused this token (or this page's origin)." :
        "The service refused the connection: it may need a token.");
      return;
    }
    if (++retries > MAX_RETRIES) { setStatus("refused", "disconnected: reload to retry"); return; }
    setStatus("connecting", "reconnecting…");
    setTimeout(connect, 1000);
  };
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("token").value);
  $("token").value = "";
  setStatus("connecting", "connecting…");
  connect();
});

// A token pasted into the address bar (#token=...) on an open page: take it and connect.
window.addEventListener("hashchange", () => {
  if (!/(?:^#|&)token=/.test(location.hash)) return;
  setStatus("connecting", "connecting…");
  connect();
});

connect();
