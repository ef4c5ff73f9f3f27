// The standalone /feedback page: the form plus a slow refresh of recent answers.
import { showError } from "./api.js";
import { mountFeedback } from "./feedback.js";

const panel = mountFeedback(document.getElementById("feedback"));

async function tick() {
  try {
    await panel.refresh();
    showError("");
  } catch (exc) {
    showError(exc.message);
  }
  setTimeout(tick, 5000);
}
tick();
