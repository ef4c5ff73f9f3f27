// The dashboard's "Experiments" panel: every A/B test, running first, with each arm's
// results (n, mean and interval, difference to the control, status), what it cost, and
// curves over time; buttons to stop a running one or promote its winner. Polls
// /experiments on its own; hidden while there are none.
import { api } from "./api.js";
import { PALETTE } from "./charts.js";
import { lineChart } from "./charts.js";
import { el, fill, fmt } from "./dom.js";

const POLL_MS = 3000;
const STATUS = {
  running: "running",
  winner: "winner",
  loser: "behind the winner",
  no_difference: "no detectable difference",
  stopped_by_guard: "stopped by a guard",
};

const num = (v, digits = 3) => (Number.isFinite(v) ? String(Number(v.toFixed(digits))) : fmt.dash);
const value = (exp, v) => (exp.metric === "cost" ? fmt.cost(v)
  : exp.metric === "latency" ? fmt.ms(v) : num(v));
const interval = (exp, pair) => (pair ? `${value(exp, pair[0])} to ${value(exp, pair[1])}`
  : fmt.dash);

function verdict(exp) {
  if (exp.state === "finished") {
    const f = exp.finish || {};
    return f.action === "promoted" ? `finished: ${f.arm} promoted` : "finished: stopped";
  }
  if (exp.status === "winner") return `winner: ${exp.winner}`;
  return STATUS[exp.status] || exp.status;
}

function arms(exp) {
  const head = ["Arm", "Model", "Share", "n", "Mean", "Interval", "Difference to control",
    "Status", "Answers", "Error rate", "Cost"];
  const rows = exp.arms.map((arm) => {
    const diff = arm.difference;
    const cells = [
      ["arm", arm.control ? `${arm.name} (control)` : arm.name],
      ["model", arm.model],
      ["share", fmt.pct(arm.share)],
      ["n", fmt.int(arm.n)],
      ["mean", value(exp, arm.mean)],
      ["ci", interval(exp, arm.ci)],
      ["difference", diff ? `${value(exp, diff.estimate)} (${interval(exp, [diff.low,
        diff.high])})` : fmt.dash],
      ["status", arm.guard ? `${STATUS[arm.status]}: ${arm.guard}` : STATUS[arm.status]
        || arm.status],
      ["answers", fmt.int(arm.answers)],
      ["error_rate", fmt.pct(arm.error_rate)],
      ["cost", fmt.cost(arm.cost_usd)],
    ];
    return el("tr", { dataset: { arm: arm.name } },
      cells.map(([col, text]) => el("td", { dataset: { col } }, text)));
  });
  return el("div", { className: "table-wrap" }, el("table", { className: "data" },
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows)));
}

function curves(exp, detail) {
  const points = (detail && detail.curve) || [];
  if (!points.length) return null;
  const series = exp.arms.map((arm, i) => ({
    name: arm.name,
    color: PALETTE[i % PALETTE.length],
    points: points.map((p) => ({ x: p.ts, y: p.arms[arm.name] ? p.arms[arm.name].mean : null })),
  }));
  const xs = points.map((p) => p.ts);
  const span = { xMin: Math.min(...xs) - 600, xMax: Math.max(...xs), xFormat: fmt.time };
  const means = lineChart({
    title: `${exp.metric}: each arm's mean so far`,
    series,
    ...span,
    yFormat: (v) => value(exp, v),
  });
  // Each challenger's difference to the control over time: the interval's two ends, on
  // an axis symmetric around zero (a winner once both ends are on one side of it).
  const bounds = exp.arms.filter((arm) => !arm.control).flatMap((arm, i) => ["lower", "upper"]
    .map((end, j) => ({
      name: `${arm.name} vs control, ${end} bound`,
      color: PALETTE[(i + 1) % PALETTE.length],
      dash: j ? "6 3" : "none",
      points: points.map((p) => {
        const diff = p.arms[arm.name] && p.arms[arm.name].difference;
        return { x: p.ts, y: diff ? diff[j] : null };
      }),
    })));
  const reach = Math.max(0, ...bounds.flatMap((b) => b.points.map((p) => Math.abs(p.y ?? 0))));
  const extent = reach > 0 ? Number((reach * 1.1).toPrecision(2)) : 1;
  const differences = lineChart({
    title: "Difference to the control: its interval over time",
    series: bounds,
    ...span,
    yMax: extent,
    yMin: -extent,
    yFormat: (v) => value(exp, v),
    note: "The middle line is zero: a winner once both bounds lie on one side of it.",
  });
  return el("div", { className: "charts" }, means, differences);
}

function actions(exp, refresh) {
  if (exp.state !== "running") return null;
  const message = el("p", { className: "muted small", role: "status" });
  const act = async (button, path, body) => {
    button.disabled = true;
    try {
      await api(`/experiments/${encodeURIComponent(exp.name)}/${path}`,
        { method: "POST", body });
      message.textContent = `${exp.name}: done.`;
    } catch (exc) {
      message.textContent = `${exp.name}: ${exc.message}`;
      button.disabled = false;
    }
    refresh();
  };
  const stop = el("button", { type: "button", className: "danger" }, "Stop");
  stop.addEventListener("click", () => act(stop, "stop"));
  const buttons = [stop];
  if (exp.winner) {
    const promote = el("button", { type: "button" }, `Promote ${exp.winner}`);
    promote.addEventListener("click", () => act(promote, "promote", { arm: exp.winner }));
    buttons.unshift(promote);
  }
  return el("div", { className: "row" }, buttons, message);
}

function card(exp, detail, refresh) {
  const guards = Object.entries(exp.guards || {})
    .filter(([k, v]) => v !== null && k.startsWith("max_"))
    .map(([k, v]) => `${k.replaceAll("_", " ")} ${v}`);
  return el("article", { className: "panel experiment", dataset: { experiment: exp.name } },
    el("h3", {}, exp.name, " ", el("span", { className: "muted" }, `on ${exp.route}`)),
    el("p", { dataset: { col: "verdict" } }, verdict(exp)),
    el("p", { className: "muted small" },
      `Metric ${exp.metric} (${exp.higher_is_better ? "higher" : "lower"} is better), ` +
      `${exp.split} split, sticky by ${exp.sticky_by}; always-valid intervals at ` +
      `${fmt.pct(1 - exp.alpha)}, decisions from ${exp.min_samples} per arm. ` +
      `Cost so far ${fmt.cost(exp.cost_usd)}.` +
      (guards.length ? ` Guards: ${guards.join(", ")}.` : "")),
    arms(exp), curves(exp, detail), actions(exp, refresh));
}

export function renderExperiments(host, experiments, details, refresh) {
  const section = host.closest("section");
  if (section) section.hidden = experiments.length === 0;
  host.dataset.loaded = "true";
  fill(host, experiments.map((exp) => card(exp, details[exp.name], refresh)));
}

let last = "";

async function poll(host) {
  try {
    const reply = await api("/experiments");
    const listed = reply.data.slice(0, 20);
    const details = Object.fromEntries(await Promise.all(listed.slice(0, 10).map(async (e) =>
      [e.name, await api(`/experiments/${encodeURIComponent(e.name)}`)])));
    const sig = JSON.stringify(details) + JSON.stringify(listed);
    if (sig === last) return;  // redraw only on change: buttons keep their focus
    last = sig;
    renderExperiments(host, listed, details, () => poll(host));
  } catch {
    /* the main dashboard shows errors; this panel keeps its last view */
  }
}

const host = document.getElementById("experiments");
if (host) {
  poll(host);
  setInterval(() => poll(host), POLL_MS);
}
