// Dashboard panels: totals, blacklist with live countdowns, rankings, evaluation summary,
// improvement suggestions and recent ratings.
import { api } from "./api.js";
import { el, fill, fmt } from "./dom.js";
import { DIMENSIONS } from "./feedback.js";

const title = (s) => s.charAt(0).toUpperCase() + s.slice(1);
const OPTIMIZATIONS = ["cost", "accuracy", "creativity", "speed", "continuity"];

function card(label, value, note) {
  return el("div", { className: "card" }, el("span", { className: "card-label" }, label),
    el("strong", { className: "card-value" }, value),
    note ? el("span", { className: "muted small" }, note) : null);
}

export function renderTotals(node, rows, evals) {
  const sum = (f) => rows.reduce((acc, r) => acc + (f(r) || 0), 0);
  const ok = sum((r) => r.successes);
  const bad = sum((r) => r.failures);
  const blacklisted = new Set(rows.filter((r) => r.blacklisted).map((r) => r.model)).size;
  const overall = (evals && evals.overall) || {};
  fill(node,
    card("Requests", fmt.int(sum((r) => r.requests)), `${fmt.int(ok)} ok · ${fmt.int(bad)} failed`),
    card("Success rate", ok + bad ? fmt.pct(ok / (ok + bad)) : fmt.dash),
    card("Cost", fmt.cost(sum((r) => r.cost.total))),
    card("Auto score", overall.mean_auto_score == null ? fmt.dash
      : fmt.num(overall.mean_auto_score, 2), `${fmt.int(overall.evaluated || 0)} evaluated`),
    card("Rated answers", fmt.int(overall.rated_responses || 0)),
    card("Blacklisted", fmt.int(blacklisted)));
}

export class BlacklistPanel {
  constructor(node, { onChange, announce }) {
    this.node = node;
    this.onChange = onChange;
    this.announce = announce;
    this.entries = [];
    this.signature = null;
    this.expired = false;
    setInterval(() => this.tick(), 1000);
  }

  update(entries) {
    const now = performance.now();
    const signature = JSON.stringify(entries.map((e) => [e.model, e.until, e.consecutive_failures,
      e.last_error]));
    this.entries = entries.map((e) => ({ ...e, deadline: now + (e.seconds_left || 0) * 1000 }));
    this.expired = false;
    if (signature === this.signature) return this.tick();
    this.signature = signature;
    if (!entries.length) {
      fill(this.node, el("p", { className: "muted", id: "blacklist-empty" },
        "No models are blacklisted."));
      return;
    }
    const rows = this.entries.map((e) => {
      const button = el("button", { type: "button", className: "danger",
        "aria-label": `Clear ${e.model} from the blacklist` }, "Clear");
      button.addEventListener("click", () => this.clear(e.model, button));
      e.clock = el("span", { className: "countdown", dataset: { model: e.model } });
      return el("tr", { dataset: { model: e.model } },
        el("th", { scope: "row" }, e.model),
        el("td", { className: "num" }, fmt.int(e.consecutive_failures)),
        el("td", { className: "error-text" }, e.last_error || fmt.dash),
        el("td", {}, fmt.time(e.since)),
        el("td", { className: "num" }, e.clock),
        el("td", {}, button));
    });
    fill(this.node, el("div", { className: "table-wrap", role: "region", tabIndex: 0,
      "aria-label": "Blacklisted models" },
    el("table", { className: "data", id: "blacklist-table" },
      el("thead", {}, el("tr", {}, ["Model", "Consecutive failures", "Last error",
        "Since", "Returns in", "Action"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows))));
    this.tick();
  }

  tick() {
    const now = performance.now();
    for (const e of this.entries) {
      if (!e.clock) continue;
      const left = (e.deadline - now) / 1000;
      e.clock.textContent = left > 0 ? fmt.clock(left) : "returning now";
      if (left <= 0 && !this.expired) {
        this.expired = true;
        this.onChange();
      }
    }
  }

  async clear(model, button) {
    button.disabled = true;
    try {
      await api(`/performance/blacklisted/${encodeURIComponent(model)}`, { method: "DELETE" });
      this.announce(`${model} was cleared from the blacklist.`);
    } catch (exc) {
      this.announce(`Could not clear ${model}: ${exc.message}`);
      button.disabled = false;
    }
    this.onChange();
  }
}

function partsList(parts) {
  return el("dl", { className: "parts" }, Object.entries(parts || {}).map(([k, v]) => [
    el("dt", {}, k.replaceAll("_", " ")),
    el("dd", {}, typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(4))
      : v === null ? fmt.dash : String(v)),
  ]));
}

export function renderRankings(node, data, openKeys) {
  const rankings = data.rankings || {};
  fill(node, OPTIMIZATIONS.filter((o) => o in rankings).map((opt) => el("section",
    { className: "rank-card", dataset: { optimization: opt } },
    el("h3", {}, title(opt)),
    rankings[opt].length
      ? el("ol", {}, rankings[opt].map((r) => {
        const details = el("details", { dataset: { key: `${opt}/${r.model}` } },
          el("summary", {}, "Score parts"), partsList(r.parts));
        details.open = openKeys.has(`${opt}/${r.model}`);
        details.addEventListener("toggle", () => {
          if (details.open) openKeys.add(details.dataset.key);
          else openKeys.delete(details.dataset.key);
        });
        return el("li", {},
          el("div", { className: "rank-line" }, el("span", { className: "model" }, r.model),
            el("span", { className: "num" }, fmt.num(r.score, 3)),
            r.blacklisted ? el("span", { className: "badge bad" }, "blacklisted") : null),
          details);
      }))
      : el("p", { className: "muted" }, "No model serves this type."))));
}

export function renderEvaluation(node, evals) {
  const o = evals.overall || {};
  const flags = Object.entries(o.flag_rates || {});
  const means = DIMENSIONS.map((d) => `${d} ${o.feedback_means && o.feedback_means[d] != null
    ? fmt.num(o.feedback_means[d], 2) : fmt.dash}`).join(" · ");
  const suggestions = evals.suggestions || [];
  fill(node,
    el("dl", { className: "facts wide" },
      el("dt", {}, "Answers logged"), el("dd", {}, fmt.int(o.responses || 0)),
      el("dt", {}, "Automatically evaluated"), el("dd", {}, fmt.int(o.evaluated || 0)),
      el("dt", {}, "Mean auto score"), el("dd", {}, o.mean_auto_score == null ? fmt.dash
        : fmt.num(o.mean_auto_score, 3)),
      el("dt", {}, "Flags"), el("dd", {}, flags.length
        ? flags.map(([f, r]) => `${f} ${fmt.pct(r)}`).join(" · ") : "none"),
      el("dt", {}, "Rated answers"), el("dd", {}, fmt.int(o.rated_responses || 0)),
      el("dt", {}, "Feedback means"), el("dd", {}, means)),
    el("h3", {}, "Improvement suggestions"),
    suggestions.length
      ? el("ul", { className: "suggestions" }, suggestions.map((s) => el("li", {},
        el("p", {}, el("span", { className: "badge warn" }, s.kind), " ",
          el("strong", {}, s.model), el("span", { className: "muted" }, ` · ${s.conversation_type}`)),
        el("p", {}, s.message),
        el("p", {}, el("em", {}, "Proposed: "), s.proposed_change),
        el("details", {}, el("summary", {}, "Evidence"), partsList(s.evidence)))))
      : el("p", { className: "muted" },
        "No suggestions: nothing in the data needs attention yet (they need enough traffic " +
        "and ratings to be sure)."));
}

export function renderRecentFeedback(node, items) {
  if (!items.length) {
    fill(node, el("p", { className: "muted" }, "No ratings yet. Rate an answer with the form."));
    return;
  }
  fill(node, el("ul", { className: "recent", id: "recent-list" }, items.map((f) => el("li", {},
    el("p", {}, el("strong", {}, f.model), el("span", { className: "muted" },
      ` · ${fmt.datetime(f.ts)}`)),
    el("p", { className: "small" }, DIMENSIONS.filter((d) => f[d] != null)
      .map((d) => `${d} ${f[d]}`).join(" · ")),
    f.comment ? el("p", { className: "comment" }, f.comment) : null,
    el("p", { className: "muted small mono" }, f.response_id)))));
}
