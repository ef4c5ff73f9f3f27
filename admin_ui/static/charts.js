// Inline SVG charts: a line chart over time and a grouped bar chart. No libraries.
import { el } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const W = 520;
const H = 200;
const M = { left: 74, right: 16, top: 12, bottom: 28 };
// Okabe and Ito's colour-blind-safe hues (their yellow is too pale on white), each far
// from the others; past them, series repeat a hue with a dash pattern (see seriesStyle).
export const PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#56b4e9", "#e69f00",
  "#000000"];
const DASHES = ["none", "6 3", "2 3", "8 3 2 3"];

/** The colour and dash of the i-th of many series: no two alike for 28 of them. */
export function seriesStyle(i) {
  const k = Math.max(0, i);
  return { color: PALETTE[k % PALETTE.length],
    dash: DASHES[Math.floor(k / PALETTE.length) % DASHES.length] };
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

function frame(label, yMax, yFormat, yMin = 0) {
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": label,
    preserveAspectRatio: "xMidYMid meet",
    class: "chart",
  });
  root.append(svg("title", {}, label));
  const plotH = H - M.top - M.bottom;
  for (const f of [0, 0.5, 1]) {
    const y = M.top + plotH * (1 - f);
    root.append(svg("line", { x1: M.left, x2: W - M.right, y1: y, y2: y, class: "grid" }));
    root.append(
      svg("text", { x: M.left - 6, y: y + 4, "text-anchor": "end", class: "tick" },
        yFormat(yMin + (yMax - yMin) * f)),
    );
  }
  return root;
}

function legend(series) {
  return el(
    "ul",
    { className: "legend" },
    series.map((s) => {
      const sw = svg("svg", { width: 22, height: 10, "aria-hidden": "true", focusable: "false" });
      sw.append(svg("line", { x1: 1, x2: 21, y1: 5, y2: 5, stroke: s.color, "stroke-width": 3,
        "stroke-dasharray": s.dash || "none" }));
      return el("li", {}, sw, s.name);
    }),
  );
}

function figure(title, chart, series, note) {
  return el("figure", { className: "chart-card" },
    el("figcaption", {}, title), chart, series.length ? legend(series) : null,
    note ? el("p", { className: "muted small" }, note) : null);
}

/**
 * A line chart of series [{name, color, dash?, points: [{x, y|null}]}] over [xMin, xMax].
 * Returns a <figure> with the SVG and a text legend.
 */
export function lineChart({ title, label, series, xMin, xMax, yFormat: given = String,
  yAxis, yMax: fixedMax, yMin = 0, xFormat = String, note }) {
  const ys = series.flatMap((s) => s.points.map((p) => p.y)).filter((y) => Number.isFinite(y));
  const yMax = fixedMax || niceMax(Math.max(0, ...ys));
  // yAxis(yMax) gives a formatter suited to the axis's range (cost: $ or µ$)
  const yFormat = yAxis ? yAxis(yMax) : given;
  const root = frame(label || title, yMax, yFormat, yMin);
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const span = xMax - xMin || 1;
  const sx = (x) => M.left + ((x - xMin) / span) * plotW;
  const sy = (y) => M.top + plotH * (1 - (y - yMin) / (yMax - yMin));
  for (const [i, x] of [xMin, xMin + span / 2, xMax].entries()) {
    const anchor = ["start", "middle", "end"][i];
    root.append(svg("text", { x: sx(x), y: H - 8, "text-anchor": anchor, class: "tick" },
      xFormat(x)));
  }
  for (const s of series) {
    const runs = [[]];
    for (const p of s.points) {
      if (Number.isFinite(p.y)) runs[runs.length - 1].push(p);
      else if (runs[runs.length - 1].length) runs.push([]);
    }
    const g = svg("g", { class: "series" });
    for (const run of runs) {
      if (run.length > 1) {
        g.append(svg("polyline", {
          points: run.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" "),
          fill: "none", stroke: s.color, "stroke-width": 2, "stroke-dasharray": s.dash || "none",
          "stroke-linejoin": "round",
        }));
      }
      if (run.length === 1 || s.points.length <= 60) {
        for (const p of run) {
          const dot = svg("circle", { cx: sx(p.x), cy: sy(p.y), r: run.length === 1 ? 3.5 : 2,
            fill: s.color });
          dot.append(svg("title", {}, `${s.name} at ${xFormat(p.x)}: ${yFormat(p.y)}`));
          g.append(dot);
        }
      }
    }
    root.append(g);
  }
  if (!ys.length) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "nodata" },
      "No data in this range"));
  }
  return figure(title, root, series, note);
}

/** Grouped bars: groups (x labels) × series [{name, color, values: [v|null], counts?}]. */
export function barChart({ title, label, groups, series, yMax, yFormat = String, note }) {
  const values = series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  const top = yMax || niceMax(Math.max(0, ...values));
  const root = frame(label || title, top, yFormat);
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const groupW = plotW / Math.max(1, groups.length);
  const barW = Math.min(36, (groupW * 0.8) / Math.max(1, series.length));
  const maxChars = Math.max(4, Math.floor(groupW / 7));
  groups.forEach((name, gi) => {
    const x0 = M.left + gi * groupW + (groupW - barW * series.length) / 2;
    series.forEach((s, si) => {
      const v = s.values[gi];
      if (!Number.isFinite(v)) return;
      const h = (Math.min(v, top) / top) * plotH;
      const rect = svg("rect", { x: x0 + si * barW, y: M.top + plotH - h, width: barW - 2,
        height: Math.max(h, 1), fill: s.color });
      const n = s.counts ? ` (${s.counts[gi]} rating${s.counts[gi] === 1 ? "" : "s"})` : "";
      rect.append(svg("title", {}, `${name} · ${s.name}: ${yFormat(v)}${n}`));
      root.append(rect);
    });
    const short = name.length > maxChars ? `${name.slice(0, maxChars - 1)}…` : name;
    const text = svg("text", { x: M.left + gi * groupW + groupW / 2, y: H - 8,
      "text-anchor": "middle", class: "tick" }, short);
    text.append(svg("title", {}, name));
    root.append(text);
  });
  if (!values.length) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "nodata" },
      "No ratings yet"));
  }
  return figure(title, root, series, note);
}
