// The sortable per-model performance table. Headers are buttons; aria-sort says the order.
import { el, fill, fmt } from "./dom.js";
import { DIMENSIONS } from "./feedback.js";

const title = (s) => s.charAt(0).toUpperCase() + s.slice(1);
const num = (v, d) => (v === null || v === undefined ? fmt.dash : fmt.num(v, d));

function feedbackCell(row, dim) {
  const f = row.feedback && row.feedback[dim];
  if (!f || !f.count) return fmt.dash;
  return el("span", { title: `${f.count} rating${f.count === 1 ? "" : "s"}` },
    fmt.num(f.mean, 2), el("span", { className: "muted small" }, ` ·${f.count}`));
}

function statusCell(row) {
  if (row.blacklisted) return el("span", { className: "badge bad" }, "blacklisted");
  if (row.consecutive_failures) {
    const n = row.consecutive_failures;
    return el("span", { className: "badge warn", title: `${n} failed in a row` },
      `${n} failing`);
  }
  if (!row.requests) return el("span", { className: "muted" }, "no traffic");
  return el("span", { className: "badge ok" }, "ok");
}

// Feedback headers are abbreviated (the full name is the button's accessible name and tooltip).
const SHORT = { relevance: "Relev.", accuracy: "Accur.", helpfulness: "Helpf.",
  creativity: "Creat." };

// Every column fits a 1,400 px window: related figures share a column (latency mean and
// p95, tokens in and out), and headers wrap rather than widen their column.
export const COLUMNS = [
  { key: "model", label: "Model", text: true, get: (r) => r.model },
  { key: "type", label: "Type", text: true, get: (r) => r.conversation_type },
  { key: "requests", label: "Requests", get: (r) => r.requests, show: (r) => fmt.int(r.requests) },
  { key: "failures", label: "Failed", get: (r) => r.failures, show: (r) => fmt.int(r.failures) },
  { key: "success_rate", label: "Success rate", get: (r) => r.success_rate,
    show: (r) => fmt.pct(r.success_rate) },
  { key: "latency_mean", label: "Latency mean / p95", get: (r) => r.latency_ms.mean,
    show: (r) => `${fmt.ms(r.latency_ms.mean)} / ${fmt.ms(r.latency_ms.p95)}` },
  { key: "ttft", label: "TTFT mean", get: (r) => r.ttft_ms.mean, show: (r) => fmt.ms(r.ttft_ms.mean) },
  { key: "tokens", label: "Tokens in / out",
    get: (r) => (r.mean_prompt_tokens === null ? null
      : (r.mean_prompt_tokens || 0) + (r.mean_completion_tokens || 0)),
    show: (r) => `${num(r.mean_prompt_tokens, 0)} / ${num(r.mean_completion_tokens, 0)}` },
  { key: "cost", label: "Cost", get: (r) => r.cost.total, show: (r) => fmt.cost(r.cost.total) },
  { key: "cost_per_request", label: "Cost / request", get: (r) => r.cost.per_request,
    show: (r) => fmt.cost(r.cost.per_request) },
  ...DIMENSIONS.map((dim) => ({ key: `fb_${dim}`, label: SHORT[dim] || title(dim),
    full: title(dim), group: "feedback",
    get: (r) => (r.feedback && r.feedback[dim] ? r.feedback[dim].mean : null),
    show: (r) => feedbackCell(r, dim) })),
  { key: "auto_score", label: "Auto score", get: (r) => r.auto_score,
    show: (r) => num(r.auto_score, 2) },
  { key: "status", label: "Status",
    get: (r) => (r.blacklisted ? 2 : r.consecutive_failures ? 1 : 0), show: statusCell },
];

export class PerfTable {
  constructor(table, onSort) {
    this.table = table;
    this.sort = { key: "requests", dir: "descending" };
    this.rows = [];
    this.onSort = onSort;
    this.buildHead();
  }

  buildHead() {
    const top = el("tr");
    const bottom = el("tr");
    let groupDone = false;
    this.headers = new Map();
    for (const col of COLUMNS) {
      const button = el("button", { type: "button", className: "sort", dataset: { key: col.key },
        title: col.full, "aria-label": col.full },
      col.label, el("span", { className: "arrow", "aria-hidden": "true" }));
      button.addEventListener("click", () => this.toggle(col));
      const th = el("th", { scope: "col", className: col.text ? "" : "num" }, button);
      this.headers.set(col.key, th);
      if (col.group) {
        if (!groupDone) {
          top.append(el("th", { scope: "colgroup", colSpan: DIMENSIONS.length, className: "group" },
            "Feedback (mean 1–5 · ratings)"));
          groupDone = true;
        }
        bottom.append(th);
      } else {
        th.rowSpan = 2;
        top.append(th);
      }
    }
    fill(this.table.tHead, top, bottom);
    this.markSorted();
  }

  toggle(col) {
    if (this.sort.key === col.key) {
      this.sort.dir = this.sort.dir === "ascending" ? "descending" : "ascending";
    } else {
      this.sort = { key: col.key, dir: col.text ? "ascending" : "descending" };
    }
    this.markSorted();
    this.render(this.rows);
    if (this.onSort) this.onSort(this.sort);
  }

  markSorted() {
    for (const [key, th] of this.headers) {
      const arrow = th.querySelector(".arrow");
      if (key === this.sort.key) {
        th.setAttribute("aria-sort", this.sort.dir);
        arrow.textContent = this.sort.dir === "ascending" ? " ▲" : " ▼";
      } else {
        th.removeAttribute("aria-sort");
        arrow.textContent = "";
      }
    }
  }

  sorted(rows) {
    const col = COLUMNS.find((c) => c.key === this.sort.key) || COLUMNS[2];
    const sign = this.sort.dir === "ascending" ? 1 : -1;
    return [...rows].sort((a, b) => {
      const x = col.get(a);
      const y = col.get(b);
      const xn = x === null || x === undefined;
      const yn = y === null || y === undefined;
      if (xn || yn) return xn === yn ? a.model.localeCompare(b.model) : xn ? 1 : -1;
      const c = col.text ? String(x).localeCompare(String(y)) : x - y;
      return c ? sign * c : a.model.localeCompare(b.model);
    });
  }

  render(rows) {
    this.rows = rows;
    const body = this.table.tBodies[0];
    if (!rows.length) {
      fill(body, el("tr", {}, el("td", { colSpan: COLUMNS.length, className: "muted" },
        "No enabled model serves this conversation type.")));
      return;
    }
    fill(body, this.sorted(rows).map((r) => el("tr",
      { className: r.requests ? "" : "idle", dataset: { model: r.model, type: r.conversation_type } },
      COLUMNS.map((col, i) => {
        const content = col.show ? col.show(r) : col.get(r);
        const props = { className: col.text ? "" : "num", dataset: { col: col.key } };
        if (i === 0) {
          props.scope = "row";
          return el("th", props, content);
        }
        return el("td", props, content);
      }))));
  }
}
