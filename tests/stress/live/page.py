"""The dashboard page: static HTML with inline CSS and script, holding no data of its own.

It opens an EventSource on `/events` and redraws from each JSON snapshot: progress, counts, the
tests running now, the timeline filling in (every execution on the first free row, as the
report's timeline packs them), the capacity curve during --find-capacity, the host's load and
the service's CPU. When the run says it finished, the page closes the feed (no reconnect loop
against a server that is gone). No external resource: it works offline like report.html.
"""

PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>stress run (live)</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1rem 1.5rem;color:#212121}
h1{font-size:1.3rem;margin:.2rem 0}h2{font-size:1.05rem;margin:1.2rem 0 .3rem;border-bottom:1px solid #ddd}
.badge{font-size:.8rem;padding:2px 8px;border-radius:10px;background:#1565c0;color:#fff}
.bar{height:14px;background:#eee;border-radius:7px;overflow:hidden;margin:.4rem 0}
.bar>div{height:100%;background:#2e7d32;width:0}
.counts span{margin-right:1rem}.passed{color:#2e7d32}.failed{color:#c62828}.skipped{color:#757575}
.lost{color:#6a1b9a}.running{color:#1565c0}
table{border-collapse:collapse;width:100%;font-size:13px}td,th{border-bottom:1px solid #eee;padding:2px 6px;text-align:left}
svg{width:100%;background:#fafafa;border:1px solid #eee}
#notes{font:12px monospace;color:#444;white-space:pre-wrap;max-height:10rem;overflow:auto}
.muted{color:#777;font-size:12px}
</style></head><body>
<h1><span id="title">stress run</span> <span class="badge" id="phase">connecting</span></h1>
<div class="bar"><div id="progress"></div></div>
<div class="counts"><span id="done">0 runs</span><span class="passed" id="passed">passed 0</span>
<span class="failed" id="failed">failed 0</span><span class="skipped" id="skipped">skipped 0</span>
<span class="lost" id="lost"></span><span class="running" id="nrunning">running 0</span>
<span class="muted" id="elapsed"></span> <span class="muted" id="link">feed: connecting</span></div>
<h2>Running now</h2><table><thead><tr><th>test</th><th>elapsed</th></tr></thead>
<tbody id="running"></tbody></table>
<h2>Timeline</h2><p class="muted">Each bar is one execution on the first free row (a connection);
blue: still running; x: seconds since the dashboard started.</p><svg id="timeline" height="60"></svg>
<div id="capbox" hidden><h2>Capacity search</h2><p class="muted">p95 duration (s, blue) and error
rate (%, red) per step's concurrency, each scaled to the top value in its corner; a hollow point
crossed its criteria; green line: the limit found.</p>
<svg id="capacity" height="220"></svg></div>
<h2>Host</h2><p class="muted">1-minute load (grey) and the service's CPU % (blue, 100 % = one core)
over the run, each scaled to the top value in its corner.</p>
<svg id="host" height="120"></svg>
<h2>Notes</h2><div id="notes"></div>
<script>
"use strict";
const NS = "http://www.w3.org/2000/svg";
const COLORS = {passed:"#2e7d32", failed:"#c62828", lost:"#6a1b9a", skipped:"#9e9e9e", running:"#1565c0"};
function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function text(id, value) { document.getElementById(id).textContent = value; }
function clear(svg) { while (svg.firstChild) svg.removeChild(svg.firstChild); }
function drawTimeline(bars) {
  const svg = document.getElementById("timeline"); clear(svg);
  const ends = [], rows = [];
  for (const b of bars.slice().sort((a, c) => a.start - c.start)) {
    let k = ends.findIndex(e => e <= b.start + 1e-6);
    if (k < 0) { k = ends.length; ends.push(0); }
    ends[k] = b.end; rows.push([k, b]);
  }
  const W = svg.clientWidth || 1000, H = 18 * Math.max(ends.length, 1) + 24;
  svg.setAttribute("height", H);
  const span = Math.max(1, ...bars.map(b => b.end)), x = s => 40 + (W - 50) * s / span;
  for (const [k, b] of rows) {
    const r = el("rect", {x: x(b.start), y: 4 + 18 * k, height: 14,
      width: Math.max(1.5, x(b.end) - x(b.start)), fill: COLORS[b.status] || "#1565c0"}, svg);
    el("title", {}, r).textContent = `${b.label}: ${b.status}, ${(b.end - b.start).toFixed(2)} s`;
    if (x(b.end) - x(b.start) > 70) el("text", {x: x(b.start) + 3, y: 15 + 18 * k, "font-size": 10,
      fill: "#fff"}, svg).textContent = b.label;
  }
  el("text", {x: 40, y: H - 4, "font-size": 10}, svg).textContent = "0 s";
  el("text", {x: W - 60, y: H - 4, "font-size": 10}, svg).textContent = span.toFixed(1) + " s";
}
function polyline(svg, pts, color, dash) {
  if (pts.length) el("polyline", {points: pts.map(p => p.join(",")).join(" "), fill: "none",
    stroke: color, "stroke-width": 1.5, "stroke-dasharray": dash || ""}, svg);
}
function drawCapacity(steps, cap) {
  const box = document.getElementById("capbox");
  if (!steps.length) { box.hidden = true; return; }
  box.hidden = false;
  const svg = document.getElementById("capacity"); clear(svg);
  const W = svg.clientWidth || 1000, H = 220, maxC = Math.max(...steps.map(s => s.concurrency), 1);
  const maxP = Math.max(...steps.map(s => s.p95_duration || 0), 0.001);
  // The top 20 px hold the scales' labels, clear of the curves.
  const x = c => 40 + (W - 60) * c / maxC, yp = v => H - 25 - (H - 45) * v / maxP;
  const ye = v => H - 25 - (H - 45) * Math.min(v, 1);
  polyline(svg, steps.filter(s => s.p95_duration != null).map(s => [x(s.concurrency), yp(s.p95_duration)]), "#1565c0");
  polyline(svg, steps.map(s => [x(s.concurrency), ye(s.error_rate || 0)]), "#c62828", "4 3");
  for (const s of steps) {
    el("text", {x: x(s.concurrency), y: H - 14, "font-size": 10, "text-anchor": "middle"}, svg).textContent = s.concurrency;
    if (s.p95_duration == null) continue;
    const c = el("circle", {cx: x(s.concurrency), cy: yp(s.p95_duration), r: 4,
      fill: s.held ? "#1565c0" : "#fff", stroke: "#1565c0"}, svg);
    el("title", {}, c).textContent = `step ${s.step}: ${s.concurrency} in flight, p95 ${s.p95_duration.toFixed(2)} s, errors ${((s.error_rate||0)*100).toFixed(1)}%`;
  }
  if (cap && cap.max_sustainable_concurrency != null) {
    const lx = x(cap.max_sustainable_concurrency);
    el("line", {x1: lx, x2: lx, y1: 10, y2: H - 25, stroke: "#2e7d32", "stroke-width": 2}, svg);
    const right = lx > W * 0.6;
    el("text", {x: right ? lx - 4 : lx + 4, y: 28, "font-size": 11, "text-anchor": right ? "end" : "start"},
      svg).textContent = `sustains ${cap.max_sustainable_concurrency} (limited by ${cap.limited_by})`;
  }
  el("text", {x: W / 2 - 60, y: H - 6, "font-size": 10}, svg).textContent = "tests in flight (concurrency)";
  el("text", {x: 2, y: 12, "font-size": 10}, svg).textContent = "p95 " + maxP.toFixed(2) + " s";
  el("text", {x: W - 2, y: 12, "font-size": 10, "text-anchor": "end", fill: "#c62828"}, svg).textContent = "errors 100 %";
}
function drawHost(host) {
  const svg = document.getElementById("host"); clear(svg);
  if (!host.length) return;
  const W = svg.clientWidth || 1000, H = 120, t1 = Math.max(1, ...host.map(p => p.t));
  const maxL = Math.max(1, ...host.map(p => p.load1 || 0)), maxC = Math.max(100, ...host.map(p => p.service_cpu_percent || 0));
  const x = t => 40 + (W - 50) * t / t1;
  polyline(svg, host.filter(p => p.load1 != null).map(p => [x(p.t), H - 15 - (H - 32) * p.load1 / maxL]), "#455a64");
  polyline(svg, host.filter(p => p.service_cpu_percent != null).map(p => [x(p.t), H - 15 - (H - 32) * p.service_cpu_percent / maxC]), "#1565c0");
  el("text", {x: 2, y: 12, "font-size": 10}, svg).textContent = "load " + maxL.toFixed(1);
  el("text", {x: W - 2, y: 12, "font-size": 10, "text-anchor": "end", fill: "#1565c0"}, svg).textContent = "CPU " + maxC.toFixed(0) + " %";
}
function render(s) {
  text("title", s.title); text("phase", s.phase);
  const total = s.total || 0, pct = total ? Math.min(100, 100 * s.done / total) : 0;
  document.getElementById("progress").style.width = pct + "%";
  text("done", total ? `${s.done}/${total} runs` : `${s.done} runs`);
  for (const k of ["passed", "failed", "skipped"]) text(k, `${k} ${s.counts[k] || 0}`);
  text("lost", s.counts.lost ? `lost ${s.counts.lost}` : "");
  text("nrunning", `running ${s.running_count}`); text("elapsed", `${s.elapsed.toFixed(0)} s`);
  const tbody = document.getElementById("running"); tbody.textContent = "";
  for (const r of s.running) {
    const tr = tbody.insertRow(); tr.insertCell().textContent = r.label;
    tr.insertCell().textContent = r.elapsed.toFixed(1) + " s";
  }
  drawTimeline(s.bars); drawCapacity(s.steps, s.capacity); drawHost(s.host);
  text("notes", s.notes.join("\n"));
}
const feed = new EventSource("events");
feed.addEventListener("state", ev => {
  const s = JSON.parse(ev.data); render(s); text("link", "feed: live");
  if (s.phase === "finished") { feed.close(); text("link", "feed: closed (run finished)"); }
});
feed.onerror = () => text("link", "feed: reconnecting");
</script></body></html>
"""
