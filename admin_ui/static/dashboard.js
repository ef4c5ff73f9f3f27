// The /model-performance dashboard: polls the admin API every 3 s and redraws what changed.
import { api, showError } from "./api.js";
import { fill } from "./dom.js";
import { mountFeedback } from "./feedback.js";
import { BlacklistPanel, renderEvaluation, renderRankings, renderRecentFeedback,
  renderTotals } from "./panels.js";
import { loadSeries, renderCharts } from "./series.js";
import { PerfTable } from "./table.js";

const POLL_MS = 3000;
const $ = (id) => document.getElementById(id);

const state = {
  type: $("f-type").value,
  metric: $("f-metric").value,
  range: Number($("f-range").value),
  openKeys: new Set(),
  sigs: {},
  models: [],
  blacklisted: new Set(),
  blacklistSeen: false,
  sawTraffic: null,
};

function announce(message) {
  $("status").textContent = message;
}

/** Run `draw` only when `data` differs from last time under `key`, so that focus, open
 * <details> and scroll positions survive the polling. */
function changed(key, data) {
  const sig = JSON.stringify(data);
  if (state.sigs[key] === sig) return false;
  state.sigs[key] = sig;
  return true;
}

const table = new PerfTable($("perf"));
const blacklist = new BlacklistPanel($("blacklist"), { onChange: () => poll(), announce });
const feedback = mountFeedback($("feedback"), {
  onSubmitted: (saved) => {
    announce(`Rating saved for ${saved.model}.`);
    delete state.sigs.recent;
    poll();
  },
});

const base = `${location.origin}/v1`;
$("empty-base").textContent = base;
$("empty-code").textContent = [
  "from openai import OpenAI",
  `client = OpenAI(base_url="${base}", api_key="<your gateway key>")`,
  'client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hi"}])',
].join("\n");

function query(extra = {}) {
  const q = new URLSearchParams(extra);
  if (state.type) q.set("conversationType", state.type);
  const s = q.toString();
  return s ? `?${s}` : "";
}

async function loadRecentFeedback(rows) {
  const rated = [...new Set(rows.filter((r) => Object.keys(r.feedback || {}).length)
    .map((r) => r.model))];
  if (!changed("recent", [state.type, rows.map((r) => [r.model, r.feedback])])) return;
  const replies = await Promise.all(rated.map((m) =>
    api(`/evaluations/model/${encodeURIComponent(m)}${query({ limit: 10 })}`)));
  const items = replies.flatMap((r) => r.feedback_history || [])
    .sort((a, b) => b.ts - a.ts).slice(0, 10);
  renderRecentFeedback($("recent-feedback"), items);
}

function noteBlacklist(entries) {
  const now = new Set(entries.map((e) => e.model));
  const added = [...now].filter((m) => !state.blacklisted.has(m));
  if (added.length && state.blacklistSeen) {
    announce(`Blacklisted: ${added.join(", ")}.`);
  }
  state.blacklisted = now;
  state.blacklistSeen = true;
}

async function refresh() {
  const [perf, ranks, black, evals] = await Promise.all([
    api(`/performance${query({ limit: 1000 })}`),
    api(`/performance/rankings${query()}`),
    api("/performance/blacklisted"),
    api(`/evaluations/summary${query()}`),
  ]);
  const rows = perf.data || [];
  const requests = rows.reduce((a, r) => a + r.requests, 0);
  const empty = $("empty");
  empty.hidden = requests > 0;
  $("empty-h").textContent = state.type ? `No ${state.type} traffic yet` : "No traffic yet";
  if (requests > 0 && state.sawTraffic === false) announce("Traffic arrived.");
  state.sawTraffic = requests > 0;

  if (changed("rows", rows)) {
    table.render(rows);
    renderTotals($("totals"), rows, evals);
  }
  noteBlacklist(black.data || []);
  blacklist.update(black.data || []);
  $("rank-type").textContent = `(${ranks.conversation_type})`;
  if (changed("rankings", ranks.rankings)) renderRankings($("rankings"), ranks, state.openKeys);
  const { generated_at: _, ...evalData } = evals;
  if (changed("evaluation", evalData)) {
    renderEvaluation($("evaluation"), evals);
    renderTotals($("totals"), rows, evals);
  }

  state.models = [...new Set(rows.map((r) => r.model))].sort();
  const active = [...new Set(rows.filter((r) => r.requests > 0).map((r) => r.model))].sort();
  const series = await loadSeries(active, { type: state.type, range: state.range });
  const seriesData = Object.fromEntries(Object.entries(series)
    .map(([m, ts]) => [m, [ts.bucket_seconds, ts.data]]));
  const minute = Math.floor(Date.now() / 60000);
  if (changed("charts", [seriesData, state.metric, state.range, minute, rows.map((r) =>
    [r.model, r.feedback])])) {
    renderCharts($("charts"), series, { metric: state.metric, range: state.range, rows,
      models: state.models });
  }
  await Promise.all([loadRecentFeedback(rows), feedback.refresh()]);
  $("updated").textContent = new Date().toLocaleTimeString([], { hour12: false });
  $("updated").dateTime = new Date().toISOString();
}

let running = false;
let again = false;
let timer = null;

async function poll() {
  clearTimeout(timer);
  if (running) {
    again = true;
    return;
  }
  running = true;
  try {
    if (!document.hidden) {
      await refresh();
      showError("");
    }
  } catch (exc) {
    showError(exc.message);
  } finally {
    running = false;
    timer = setTimeout(poll, again ? 0 : POLL_MS);
    again = false;
  }
}

$("filters").addEventListener("submit", (event) => event.preventDefault());
$("filters").addEventListener("change", () => {
  state.type = $("f-type").value;
  state.metric = $("f-metric").value;
  state.range = Number($("f-range").value);
  fill($("charts"));
  state.sigs = {};
  poll();
});
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) poll();
});

poll();
