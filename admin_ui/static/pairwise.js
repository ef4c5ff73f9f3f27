// Blind pairwise judging on the /feedback page: two answers to one prompt, in the order
// the gateway shuffled them, with no model named until the verdict is in.
import { api, ApiError } from "./api.js";
import { append, el, fill, fmt } from "./dom.js";

/** Build the judging panel inside `root`; returns {refresh} to fetch a pair when none
 * is shown (a pair on screen is never swapped under the judge). */
export function mountPairwise(root) {
  const body = el("div", { id: "pw-pair", "aria-live": "polite" });
  const result = el("div", { id: "pw-result", className: "result", role: "status",
    "aria-live": "polite" });
  const standings = el("div", { id: "pw-standings" });
  fill(root,
    el("h2", { id: "pw-h" }, "Compare two answers"),
    el("p", { className: "muted small" },
      "Two answers to the same prompt, in a random order. Which models gave them is shown " +
      "once you have judged."),
    body, result, standings);

  const interval = (ci, show) => (ci ? `${show(ci[0])} – ${show(ci[1])}` : fmt.dash);
  async function showStandings() {
    const { comparisons, results } = await api("/comparisons");
    const running = el("ul", { id: "pw-comparisons", className: "small" },
      comparisons.map((c) => el("li", { dataset: { comparison: c.name } },
        el("strong", {}, c.name), `: ${c.route} against ${c.challenger}, `,
        `${fmt.pct(c.sample)} sampled; today ${fmt.cost(c.spent_usd)} of `,
        `${fmt.cost(c.max_daily_usd)} (${fmt.int(c.shadows)} answers`,
        c.cap_reached ? ", cap reached" : "", `); ${fmt.int(c.judged)} of `,
        `${fmt.int(c.pairs)} pairs judged.`)));
    // Closed until asked for: the models' names and standings stay out of the judge's
    // sight while judging (keeping it open across refreshes once opened).
    const open = standings.querySelector("details")?.open ?? false;
    const details = el("details", { id: "pw-details", open },
      el("summary", {}, "Comparisons and results so far (names the models)"));
    fill(standings, details);
    if (!results.ratings.length) return append(details, comparisons.length ? running : null);
    const head = (...names) => el("thead", {}, el("tr", {}, names.map((n) => el("th", {}, n))));
    append(details, [
      comparisons.length ? running : null,
      el("h3", {}, "Results so far"),
      el("div", { className: "table-wrap" }, el("table", { id: "pw-ratings", className: "data" },
        el("caption", { className: "visually-hidden" }, "Bradley-Terry ratings"),
        head("Rank", "Model", "Rating", "95 % interval", "Judgements"),
        el("tbody", {}, results.ratings.map((r) => el("tr", { dataset: { model: r.model } },
          el("td", { className: "num" }, r.rank), el("th", {}, r.model),
          el("td", { className: "num", dataset: { col: "rating" } }, fmt.num(r.rating, 0)),
          el("td", { className: "num" }, interval(r.rating_ci, (v) => fmt.num(v, 0))),
          el("td", { className: "num" }, fmt.int(r.judgements))))))),
      el("div", { className: "table-wrap" }, el("table", { id: "pw-pairs", className: "data" },
        el("caption", { className: "visually-hidden" }, "Win rates"),
        head("Models", "First wins", "95 % interval", "Wins", "Ties"),
        el("tbody", {}, results.pairs.map((p) => el("tr", {},
          el("th", {}, `${p.model_a} vs ${p.model_b}`),
          el("td", { className: "num" }, fmt.pct(p.a_win_rate)),
          el("td", { className: "num" }, interval(p.a_win_rate_ci, fmt.pct)),
          el("td", { className: "num" }, `${p.a_wins} – ${p.b_wins}`),
          el("td", { className: "num" }, fmt.int(p.ties))))))),
      el("p", { id: "pw-decided", className: "muted small" }, results.order_decided
        ? "The order is decided: each model leads the next by more than its 95 % interval."
        : "The order is not decided yet: some leads are within their 95 % interval.")]);
  }

  let shown = null; // the pair on screen
  let skipped = 0; // pairs passed over, so that Skip shows the next one
  let busy = false;

  const answer = (label, side) => el("figure", { className: "pw-answer",
    dataset: { side: label.toLowerCase() } },
  el("figcaption", {}, `Answer ${label}`),
  el("blockquote", { className: "answer" }, side.answer || "(empty answer)"));

  function show(pair) {
    shown = pair;
    if (!pair) {
      fill(body, el("p", { id: "pw-empty", className: "muted" },
        "No pair of answers is waiting to be judged."));
      return;
    }
    const choice = (text, winner) => el("button", { type: "button", dataset: { winner },
      on: { click: () => judge(winner) } }, text);
    fill(body,
      el("h3", {}, "Prompt"),
      el("blockquote", { id: "pw-prompt", className: "answer" }, pair.prompt || "(not stored)"),
      el("div", { className: "two" }, answer("A", pair.first), answer("B", pair.second)),
      el("div", { className: "row", role: "group", "aria-label": "Which answer is better?" },
        choice("A is better", "a"), choice("Tie", "tie"), choice("B is better", "b"),
        el("button", { type: "button", className: "secondary",
          on: { click: () => { skipped += 1; load(); } } }, "Skip")));
  }

  async function load() {
    const pair = await api(`/admin/pairs/next?offset=${skipped}`);
    if (!pair && skipped) {
      skipped = 0; // passed over them all: start again from the newest
      return load();
    }
    return show(pair);
  }

  async function judge(winner) {
    if (busy || !shown) return;
    busy = true;
    for (const button of body.querySelectorAll("button")) button.disabled = true;
    const pair = shown;
    try {
      const saved = await api("/admin/feedback/pairwise", { method: "POST",
        body: { a: pair.first.response_id, b: pair.second.response_id, winner } });
      const verdict = winner === "tie" ? "a tie"
        : `${winner.toUpperCase()} (${winner === "a" ? saved.model_a : saved.model_b}) better`;
      result.className = "result ok";
      fill(result, el("p", {}, el("strong", {}, "Thanks — verdict saved for that pair: "), verdict, ". ",
        `A was ${saved.model_a}, B was ${saved.model_b}.`));
      skipped = 0;
      await Promise.all([load(), showStandings()]);
    } catch (exc) {
      result.className = "result error";
      fill(result, el("p", { role: "alert" }, exc instanceof ApiError ? exc.message : String(exc)));
      for (const button of body.querySelectorAll("button")) button.disabled = false;
    } finally {
      busy = false;
    }
  }

  let first = true;
  async function refresh() {
    if (first) {
      first = false;
      await showStandings();
    }
    if (!shown && !busy) await load();
  }

  return { refresh };
}
