// medsyft dashboard: polls /api/snapshot every second and draws it. No library, no CDN:
// the charts are plain SVG, each data point a <circle class="point"> (the browser test counts them).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#e76f51", "#2a9d8f", "#457b9d", "#f4a261", "#8e44ad", "#6c757d", "#bc4749", "#3d5a80"];
const W = 420, H = 220, PAD = { left: 44, right: 96, top: 10, bottom: 28 };

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function text(parent, x, y, s, anchor) {
  const t = el("text", { x, y, "text-anchor": anchor || "start" }, parent);
  t.textContent = s;
  return t;
}

function clear(svg) { while (svg.firstChild) svg.removeChild(svg.firstChild); }

function colourOf(names) {
  const map = {};
  names.forEach((n, i) => { map[n] = n === "pooled" ? "#1d232b" : COLOURS[i % COLOURS.length]; });
  return map;
}

function fmtBytes(v) {
  if (v >= 2 ** 20) return (v / 2 ** 20).toFixed(2) + " MiB";
  if (v >= 2 ** 10) return (v / 2 ** 10).toFixed(1) + " KiB";
  return `${v} B`;
}

function fmt(v, digits) {
  if (v === null || v === undefined) return "–";
  if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (Math.abs(v) >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return Number(v).toFixed(digits === undefined ? 2 : digits);
}

// A line chart: one series per site (and "pooled"), x = model round, y = the metric.
function lineChart(svg, rows, metric, fixedRange) {
  clear(svg);
  const points = rows.filter(r => r[metric] !== null && r[metric] !== undefined);
  const sites = [...new Set(points.map(r => r.site))].sort((a, b) => (a === "pooled") - (b === "pooled") || a.localeCompare(b));
  if (!points.length) { text(svg, W / 2, H / 2, "no evaluated model yet", "middle"); return; }
  const xs = points.map(r => r.model_round), ys = points.map(r => r[metric]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = fixedRange ? fixedRange[0] : Math.min(...ys), y1 = fixedRange ? fixedRange[1] : Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const sx = x => PAD.left + (x - x0) / (x1 - x0) * (W - PAD.left - PAD.right);
  const sy = y => H - PAD.bottom - (y - y0) / (y1 - y0) * (H - PAD.top - PAD.bottom);
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    el("line", { x1: PAD.left, x2: W - PAD.right, y1: sy(y), y2: sy(y), class: "grid" }, svg);
    text(svg, PAD.left - 4, sy(y) + 3, fmt(y), "end");
  }
  el("line", { x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom, class: "axis" }, svg);
  for (let x = x0; x <= x1; x++) text(svg, sx(x), H - PAD.bottom + 14, String(x), "middle");
  text(svg, (PAD.left + W - PAD.right) / 2, H - 2, "round (0 = initial model)", "middle");
  const colours = colourOf(sites);
  sites.forEach((site, i) => {
    const series = points.filter(r => r.site === site).sort((a, b) => a.model_round - b.model_round);
    const pooled = site === "pooled";
    el("polyline", { points: series.map(r => `${sx(r.model_round)},${sy(r[metric])}`).join(" "),
                     fill: "none", stroke: colours[site], "stroke-width": pooled ? 2.5 : 1.2,
                     opacity: pooled ? 1 : 0.75 }, svg);
    for (const r of series) {
      const c = el("circle", { cx: sx(r.model_round), cy: sy(r[metric]), r: pooled ? 3 : 2,
                               fill: colours[site], class: "point", "data-site": site }, svg);
      el("title", {}, c).textContent = `${site}, round ${r.model_round}: ${fmt(r[metric], 3)}`;
    }
    const ly = PAD.top + 12 + i * 14;
    el("rect", { x: W - PAD.right + 8, y: ly - 8, width: 10, height: 10, fill: colours[site] }, svg);
    text(svg, W - PAD.right + 22, ly, site);
  });
}

// A bar chart: one bar (and optionally a lighter bar behind it for a total) per label.
function barChart(svg, bars, emptyText, unit, format) {
  const show = format || (v => fmt(v) + (unit || ""));
  clear(svg);
  if (!bars.length) { text(svg, W / 2, H / 2, emptyText, "middle"); return; }
  const top = Math.max(...bars.map(b => Math.max(b.value, b.total || 0)), 1e-9);
  const slot = (W - PAD.left - 16) / bars.length, bw = Math.min(48, slot * 0.6);
  const sy = v => H - PAD.bottom - v / top * (H - PAD.top - PAD.bottom - 14);
  el("line", { x1: PAD.left, x2: W - 16, y1: H - PAD.bottom, y2: H - PAD.bottom, class: "axis" }, svg);
  bars.forEach((b, i) => {
    const x = PAD.left + slot * i + (slot - bw) / 2;
    if (b.total) {
      el("rect", { x, y: sy(b.total), width: bw, height: H - PAD.bottom - sy(b.total), fill: "#dfe6ee" }, svg);
      text(svg, x + bw / 2, sy(b.total) - 3, `of ${fmt(b.total)}`, "middle");
    }
    const bar = el("rect", { x, y: sy(b.value), width: bw, height: H - PAD.bottom - sy(b.value),
                             fill: b.colour || "#457b9d" }, svg);
    el("title", {}, bar).textContent = `${b.label}: ${show(b.value)}`;
    el("circle", { cx: x + bw / 2, cy: sy(b.value), r: 2, fill: "#1d232b", class: "point" }, svg);
    text(svg, x + bw / 2, sy(b.value) - (b.total ? 14 : 3), show(b.value), "middle");
    text(svg, x + bw / 2, H - PAD.bottom + 14, b.label, "middle");
  });
}

function fillTable(id, rows, cells, rowClass) {
  const body = document.querySelector(`#${id} tbody`);
  body.innerHTML = "";
  if (!rows.length) {
    const tr = body.insertRow(), td = tr.insertCell();
    td.colSpan = 4; td.className = "muted"; td.textContent = "none yet";
    return;
  }
  for (const r of rows) {
    const tr = body.insertRow();
    if (rowClass) tr.className = rowClass(r);
    tr.dataset.site = r.site;
    for (const [value, cls] of cells(r)) {
      const td = tr.insertCell();
      td.textContent = value;
      if (cls) td.className = cls;
    }
  }
}

function render(s) {
  const job = s.job;
  document.getElementById("job").textContent = job
    ? `job ${job.id} · ${job.model} on '${job.dataset}' · DP ${job.dp ? "on" : "OFF"} · HE ${job.he ? "on" : "OFF"}`
    : "no job submitted yet";
  document.getElementById("run-dir").textContent = s.run_dir;
  const round = document.getElementById("round");
  round.textContent = `${s.round.completed} / ${s.round.total}`;
  round.dataset.completed = s.round.completed;
  document.getElementById("state").textContent = s.state;
  document.getElementById("progress-bar").style.width =
    s.round.total ? `${100 * s.round.completed / s.round.total}%` : "0";

  const lastRound = {};
  for (const h of s.history) lastRound[h.site] = h;
  fillTable("sites", s.health, h => [
    [h.site], [h.up === null ? "checking…" : (h.up ? "up" : "down"), "health"],
    [h.latency_ms === null ? (h.error || "–") : `${fmt(h.latency_ms, 0)} ms`],
    [lastRound[h.site] ? `${lastRound[h.site].round}: ${lastRound[h.site].status}` : "–"],
  ], h => (h.up === null ? "" : (h.up ? "up" : "down")));
  const approvals = s.approvals.map(a => ({ ...a, what: "job" })).concat(s.release.map(a => ({ ...a, what: "release" })));
  fillTable("approvals", approvals, a => [
    [a.site], [`${a.what} ${String(a.request).slice(0, 8)}`], [a.status, `status-${a.status}`], [a.decided_at || "–"],
  ]);

  lineChart(document.getElementById("chart-accuracy"), s.metrics, "accuracy", [0, 1]);
  lineChart(document.getElementById("chart-auc"), s.metrics, "auc", [0, 1]);
  lineChart(document.getElementById("chart-loss"), s.metrics, "loss");
  const colours = colourOf(s.epsilon.map(e => e.site));
  barChart(document.getElementById("chart-epsilon"),
           s.epsilon.map(e => ({ label: e.site, value: e.dataset_spent, total: e.budget, colour: colours[e.site] })),
           job && !job.dp ? "DP is off for this job" : "no call charged yet", " ε");
  barChart(document.getElementById("chart-wire"),
           s.wire.map(w => ({ label: `r${w.round}`, value: w.bytes_up })), "no round done yet", "", fmtBytes);
}

async function poll() {
  try {
    const resp = await fetch("/api/snapshot", { cache: "no-store" });
    if (resp.ok) render(await resp.json());
  } catch (err) {
    document.getElementById("state").textContent = "dashboard server not answering";
  }
  setTimeout(poll, 1000);
}

poll();
