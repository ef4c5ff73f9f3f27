// The dashboard's "Per-prompt routing" panel: for each route with `per_prompt: true`, what
// each model's learner rests on and expects. Polls /performance/prompts on its own;
// hidden while no route routes per prompt.
import { api } from "./api.js";
import { el, fill, fmt } from "./dom.js";

const POLL_MS = 3000;

function row(learner) {
  const cells = [
    ["route", learner.route],
    ["model", learner.model],
    ["ratings", fmt.num(learner.ratings, 0)],
    ["keys", fmt.int(learner.keys)],
    ["mean_rating", fmt.num(learner.mean_rating, 2)],
    ["expected_typical", fmt.num(learner.expected_typical, 2)],
    ["expected_spread", fmt.num(learner.expected_spread, 2)],
  ];
  return el("tr", { dataset: { route: learner.route, model: learner.model } },
    cells.map(([col, text]) => el("td", { dataset: { col } }, text)));
}

export function renderPrompts(host, learners) {
  const section = host.closest("section");
  if (section) section.hidden = learners.length === 0;
  const head = ["Route", "Model", "Ratings", "Keys", "Mean rating", "Expected (typical prompt)",
    "Spread between prompts"];
  fill(host, el("table", { className: "prompts" },
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, learners.map(row))));
}

async function poll(host) {
  try {
    const reply = await api("/performance/prompts");
    renderPrompts(host, reply.data);
  } catch {
    /* the main dashboard shows errors; this panel keeps its last view */
  }
}

const host = document.getElementById("prompts");
if (host) {
  poll(host);
  setInterval(() => poll(host), POLL_MS);
}
