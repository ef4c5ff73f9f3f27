// Time series for the charts: fetched per model, aggregated across models, drawn as SVG.
import { api } from "./api.js";
import { fill, fmt } from "./dom.js";
import { barChart, lineChart, PALETTE, seriesStyle } from "./charts.js";
import { DIMENSIONS } from "./feedback.js";

const METRICS = {
  requests: { label: "Requests", format: (v) => fmt.count(v) },
  failures: { label: "Failures", format: (v) => fmt.count(v) },
  latency_ms: { label: "Latency (mean)", format: (v) => fmt.ms(v) },
  cost: { label: "Cost", format: (v) => fmt.cost(v), axis: fmt.costAxis },
};
const MICRO = "µ$: millionths of a dollar.";
const RANGE_NAMES = { 900: "the last 15 minutes", 3600: "the last hour", 86400: "the last 24 hours" };
const hhmm = (ts) => new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit",
  minute: "2-digit", hour12: false });

/** {model: timeseries} for `models`, over the last `range` seconds. */
export async function loadSeries(models, { type, range }) {
  const since = Math.floor(Date.now() / 1000) - range;
  const bucket = range > 6 * 3600 ? "hour" : "minute";
  const q = `since=${since}&bucket=${bucket}${type ? `&conversationType=${type}` : ""}`;
  const replies = await Promise.all(models.map((m) =>
    api(`/performance/metrics/${encodeURIComponent(m)}?${q}`)));
  return Object.fromEntries(replies.map((r) => [r.model, r.timeseries]));
}

/** The buckets that have ended: the current one, still filling, would be drawn as a
 * drop at the right edge of every chart. */
function grid(ts, ended = true) {
  const { since, until, bucket_seconds: size } = ts;
  const out = [];
  const last = ended ? until - size : until;
  for (let t = Math.floor(since / size) * size; t <= last; t += size) out.push(t);
  return out;
}

function byTs(ts) {
  return new Map(ts.data.map((p) => [p.ts, p]));
}

function aggregate(all, xs) {
  const maps = all.map(byTs);
  const has = (k) => all.some((ts) => ts.data.some((p) => Number.isFinite(p[k])));
  const quantiles = has("p50_ms") || has("latency_p50_ms");
  return xs.map((x) => {
    const pts = maps.map((m) => m.get(x)).filter(Boolean);
    const req = pts.reduce((a, p) => a + p.requests, 0);
    const weighted = (k) => (req ? pts.reduce((a, p) => a + (p[k] || 0) * p.requests, 0) / req
      : null);
    return {
      x,
      requests: req,
      failures: pts.reduce((a, p) => a + p.failures, 0),
      successes: pts.reduce((a, p) => a + (p.successes ?? p.requests - p.failures), 0),
      cost: pts.reduce((a, p) => a + (p.cost || 0), 0),
      latency: weighted("latency_ms"),
      p50: quantiles ? weighted(has("p50_ms") ? "p50_ms" : "latency_p50_ms") : null,
      p95: quantiles ? weighted(has("p95_ms") ? "p95_ms" : "latency_p95_ms") : null,
      quantiles,
    };
  });
}

function feedbackBars(rows) {
  const models = new Map();
  for (const r of rows) {
    for (const [dim, f] of Object.entries(r.feedback || {})) {
      if (!f.count) continue;
      const m = models.get(r.model) || {};
      const acc = m[dim] || { sum: 0, count: 0 };
      acc.sum += f.mean * f.count;
      acc.count += f.count;
      m[dim] = acc;
      models.set(r.model, m);
    }
  }
  const groups = [...models.keys()].sort();
  const dims = DIMENSIONS.filter((d) => groups.some((g) => models.get(g)[d]));
  return barChart({
    title: "Feedback per model",
    label: groups.length ? `Mean human ratings (1-5) for ${groups.join(", ")}`
      : "No human ratings yet",
    groups,
    yMax: 5,
    yFormat: (v) => fmt.num(v, v % 1 ? 1 : 0),
    series: dims.map((d) => ({
      name: d,
      color: PALETTE[DIMENSIONS.indexOf(d) % PALETTE.length],
      values: groups.map((g) => (models.get(g)[d] ? models.get(g)[d].sum / models.get(g)[d].count
        : null)),
      counts: groups.map((g) => (models.get(g)[d] ? models.get(g)[d].count : 0)),
    })),
    note: groups.length ? null : "Ratings appear here after answers are rated.",
  });
}

/** Draw all charts into `node`. */
export function renderCharts(node, seriesByModel, { metric, range, rows, models }) {
  const all = Object.values(seriesByModel);
  const when = RANGE_NAMES[range] || `the last ${range} s`;
  const now = Date.now() / 1000;
  const base = all[0] || { since: now - range, until: now, bucket_seconds: range > 21600 ? 3600 : 60,
    data: [] };
  const xs = grid(base);
  const agg = aggregate(all, xs);
  const last = xs.length ? xs[xs.length - 1] : base.until;
  const common = { xMin: base.since, xMax: last, xFormat: hhmm };
  const line = (key) => agg.map((p) => ({ x: p.x, y: p[key] }));
  // Totals count every bucket, the one still filling included: they are not drawn.
  const everything = aggregate(all, grid(base, false));
  const total = (key) => everything.reduce((a, p) => a + (p[key] || 0), 0);
  const quantiles = agg.some((p) => p.quantiles);
  const latency = quantiles
    ? [{ name: "p50", color: PALETTE[0], points: line("p50") },
      { name: "p95", color: PALETTE[1], dash: "6 3", points: line("p95") }]
    : [{ name: "mean", color: PALETTE[0], points: line("latency") }];
  const m = METRICS[metric] || METRICS.requests;
  const perModel = Object.entries(seriesByModel).sort(([a], [b]) => a.localeCompare(b))
    .map(([name, ts]) => {
      const map = byTs(ts);
      return { name, ...seriesStyle(models.indexOf(name)), points: xs.map((x) => {
        const p = map.get(x);
        if (metric === "latency_ms") return { x, y: p && p.requests ? p.latency_ms : null };
        return { x, y: p ? p[metric] || 0 : 0 };
      }) };
    });
  const costMax = Math.max(0, ...agg.map((p) => p.cost || 0));
  const micro = (max) => max > 0 && max < 0.001;
  const modelMax = Math.max(0, ...perModel.flatMap((s) => s.points.map((p) => p.y || 0)));
  const success = agg.map((p) => ({ x: p.x, y: p.successes + p.failures
    ? p.successes / (p.successes + p.failures) : null }));
  fill(node,
    lineChart({ ...common, title: "Requests and failures",
      label: `Requests and failures over ${when}: ${fmt.int(total("requests"))} requests, ` +
        `${fmt.int(total("failures"))} failures`,
      yFormat: (v) => fmt.count(v), note: "The current minute is drawn once it has ended.",
      series: [{ name: "requests", color: PALETTE[0], points: line("requests") },
        { name: "failures", color: PALETTE[1], dash: "6 3", points: line("failures") }] }),
    lineChart({ ...common, title: quantiles ? "Latency (p50 and p95)" : "Latency (mean)",
      label: `Latency over ${when}`, yFormat: (v) => fmt.ms(v), series: latency,
      note: quantiles ? null : "Mean per time bucket, across all models." }),
    lineChart({ ...common, title: "Success rate of attempts", yMax: 1,
      label: `Share of attempts that succeeded over ${when}`, yFormat: (v) => fmt.pct(v),
      series: [{ name: "succeeded", color: PALETTE[2], points: success }],
      note: "A failed attempt may still have been answered by the next model." }),
    lineChart({ ...common, title: "Cost", label: `Cost over ${when}: ${fmt.cost(total("cost"))}`,
      yAxis: fmt.costAxis, series: [{ name: "cost", color: PALETTE[5], points: line("cost") }],
      note: micro(costMax) ? MICRO : null }),
    lineChart({ ...common, title: `${m.label} by model`, label: `${m.label} per model over ${when}`,
      yFormat: m.format, yAxis: m.axis, series: perModel,
      note: m.axis && micro(modelMax) ? MICRO : null }),
    feedbackBars(rows));
}
