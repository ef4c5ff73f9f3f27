// The standalone /feedback page: the form plus a slow refresh of recent answers, and
// blind pairwise judging of same-prompt comparisons.
import { showError } from "./api.js";
import { mountFeedback } from "./feedback.js";
import { mountPairwise } from "./pairwise.js";

const panel = mountFeedback(document.getElementById("feedback"));
const pairs = mountPairwise(document.getElementById("pairwise"));

async function tick() {
  try {
    await panel.refresh();
    await pairs.refresh();
    showError("");
  } catch (exc) {
    showError(exc.message);
  }
  setTimeout(tick, 5000);
}
tick();
