// The dashboard's "Keys" panel: each client key's use today and this month, and its
// answers in flight, against its budget and rate limits. Polls /admin/usage on its own; hidden while there are no keys.
import { api } from "./api.js";
import { el, fill, fmt } from "./dom.js";

const POLL_MS = 3000;

function limit(used, cap, format) {
  return cap ? `${format(used)} of ${format(cap)}` : format(used);
}

function scope(key) {
  if (key.allowed) return key.allowed.join(", ");
  const named = [...(key.routes || []), ...(key.models || [])];
  return named.length ? named.join(", ") : "everything";
}

function row(key) {
  const u = key.usage;
  const budget = key.budget || {};
  const rate = key.rate_limit || {};
  const cells = [
    ["name", key.name],
    ["source", key.revoked ? "revoked" : key.source],
    ["scope", scope(key)],
    ["spend_day", limit(u.spend_day, budget.daily_usd, fmt.cost)],
    ["spend_month", limit(u.spend_month, budget.monthly_usd, fmt.cost)],
    ["requests_day", fmt.int(u.requests_day)],
    ["tokens_day", fmt.int(u.tokens_day)],
    ["errors_day", fmt.int(u.errors_day)],
    ["last_minute", limit(u.requests_last_minute, rate.requests_per_minute, fmt.int)],
    ["in_flight", limit(u.in_flight || 0, rate.max_concurrent, fmt.int)],
  ];
  return el("tr", { dataset: { key: key.name } },
    cells.map(([col, text]) => el("td", { dataset: { col } }, text)));
}

export function renderKeys(host, keys) {
  const section = host.closest("section");
  if (section) section.hidden = keys.length === 0;
  const head = ["Key", "Source", "May use", "Spent today", "This month", "Requests today",
    "Tokens today", "Errors today", "Last minute", "In flight"];
  fill(host, el("table", { className: "keys" },
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, keys.map(row))));
}

async function poll(host) {
  try {
    const reply = await api("/admin/usage");
    renderKeys(host, reply.data);
  } catch {
    /* the main dashboard shows errors; this panel keeps its last view */
  }
}

const host = document.getElementById("keys");
if (host) {
  poll(host);
  setInterval(() => poll(host), POLL_MS);
}
