// The feedback form, shared by the dashboard panel and the /feedback page.
import { api, ApiError } from "./api.js";
import { el, fill, fmt } from "./dom.js";

export const DIMENSIONS = ["relevance", "accuracy", "helpfulness", "creativity", "overall"];
const title = (s) => s.charAt(0).toUpperCase() + s.slice(1);

function ratingGroup(dim) {
  const choices = [["", "skip"], ...[1, 2, 3, 4, 5].map((n) => [String(n), String(n)])];
  return el(
    "fieldset",
    { className: "rating", dataset: { dim } },
    el("legend", {}, title(dim)),
    choices.map(([value, text]) => {
      const id = `fb-${dim}-${value || "skip"}`;
      return el("span", { className: "choice" },
        el("input", { type: "radio", name: dim, id, value, checked: value === "" }),
        el("label", { htmlFor: id }, text));
    }),
  );
}

/** Build the form inside `root`; returns {refresh} to reload the recent answers. */
export function mountFeedback(root, { onSubmitted } = {}) {
  const recent = new Map();
  const select = el("select", { id: "fb-recent", name: "recent" });
  const idInput = el("input", { id: "fb-id", name: "response_id", type: "text",
    autocomplete: "off", spellcheck: false, placeholder: "chatcmpl-…",
    "aria-describedby": "fb-id-msg" });
  const idMsg = el("p", { id: "fb-id-msg", className: "field-msg", "aria-live": "polite" });
  const preview = el("div", { id: "fb-preview", className: "preview", "aria-live": "polite" });
  const ratingsMsg = el("p", { id: "fb-ratings-msg", className: "field-msg",
    "aria-live": "polite" });
  const comment = el("textarea", { id: "fb-comment", name: "comment", rows: 3,
    maxLength: 4000 });
  const submit = el("button", { type: "submit" }, "Submit rating");
  const result = el("div", { id: "fb-result", className: "result", role: "status",
    "aria-live": "polite" });
  const ratings = el("fieldset", { className: "ratings", "aria-describedby": "fb-ratings-msg" },
    el("legend", {}, "Ratings (1 = poor, 5 = excellent; rate at least one)"),
    DIMENSIONS.map(ratingGroup), ratingsMsg);
  const form = el("form", { id: "fb-form", className: "feedback-form", noValidate: true },
    el("div", { className: "field" },
      el("label", { htmlFor: "fb-recent" }, "Recent answer"), select),
    el("div", { className: "field" },
      el("label", { htmlFor: "fb-id" }, "Response id"), idInput, idMsg),
    preview, ratings,
    el("div", { className: "field" },
      el("label", { htmlFor: "fb-comment" }, "Comment (optional)"), comment),
    el("div", { className: "row" }, submit), result);
  fill(root, form);

  const setIdError = (message) => {
    idMsg.textContent = message || "";
    idMsg.classList.toggle("error", Boolean(message));
    if (message) idInput.setAttribute("aria-invalid", "true");
    else idInput.removeAttribute("aria-invalid");
  };
  const setRatingsError = (message) => {
    ratingsMsg.textContent = message || "";
    ratingsMsg.classList.toggle("error", Boolean(message));
  };

  function showRecord(record) {
    if (!record) return fill(preview);
    const answer = typeof record.answer === "string" && record.answer
      ? el("blockquote", { className: "answer" }, record.answer)
      : el("p", { className: "muted small" },
        "The answer text is not stored (enable storage.log_payloads to see it here).");
    fill(preview, el("dl", { className: "facts" },
      el("dt", {}, "Model"), el("dd", { dataset: { field: "model" } }, record.model),
      el("dt", {}, "Type"), el("dd", {}, record.conversation_type),
      el("dt", {}, "Time"), el("dd", {}, fmt.datetime(record.ts))), answer);
  }

  let lookupSeq = 0;
  async function lookup() {
    const id = idInput.value.trim();
    const seq = ++lookupSeq;
    setIdError("");
    if (select.value !== id) select.value = recent.has(id) ? id : "";
    if (!id) return showRecord(null);
    if (recent.has(id)) return showRecord(recent.get(id));
    try {
      const record = await api(`/admin/responses/${encodeURIComponent(id)}`);
      if (seq === lookupSeq) showRecord(record);
    } catch (exc) {
      if (seq !== lookupSeq) return;
      showRecord(null);
      setIdError(exc instanceof ApiError ? exc.message : String(exc));
    }
  }

  let timer = null;
  idInput.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(lookup, 500);
  });
  idInput.addEventListener("change", () => {
    clearTimeout(timer);
    lookup();
  });
  select.addEventListener("change", () => {
    idInput.value = select.value;
    clearTimeout(timer);
    lookup();
  });
  ratings.addEventListener("change", () => setRatingsError(""));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearTimeout(timer);
    result.className = "result";
    fill(result);
    const id = idInput.value.trim();
    const body = { response_id: id };
    for (const dim of DIMENSIONS) {
      const picked = form.querySelector(`input[name="${dim}"]:checked`);
      if (picked && picked.value) body[dim] = Number(picked.value);
    }
    if (comment.value.trim()) body.comment = comment.value;
    let ok = true;
    if (!id) {
      setIdError("Enter a response id or pick a recent answer.");
      ok = false;
    }
    if (!DIMENSIONS.some((d) => d in body)) {
      setRatingsError("Give at least one rating from 1 to 5.");
      ok = false;
    }
    if (!ok) {
      (id ? form.querySelector('input[name="relevance"]') : idInput).focus();
      return;
    }
    submit.disabled = true;
    try {
      const saved = await api("/admin/feedback", { method: "POST", body });
      const scores = Object.entries(saved.scores).map(([d, v]) => `${d} ${v}`).join(", ");
      result.classList.add("ok");
      fill(result,
        el("p", {}, el("strong", {}, "Thanks — rating saved"),
          ` for ${saved.model} (${saved.conversation_type}): ${scores}.`,
          saved.replaced_previous ? " It replaces your earlier rating of this answer." : ""),
        saved.comment ? el("p", {}, "Comment: ", el("q", { className: "comment" }, saved.comment))
          : null);
      for (const dim of DIMENSIONS) form.querySelector(`#fb-${dim}-skip`).checked = true;
      comment.value = "";
      if (onSubmitted) onSubmitted(saved);
    } catch (exc) {
      const message = exc instanceof ApiError ? exc.message : String(exc);
      if (exc.param === "response_id" || exc.code === "response_not_found") {
        setIdError(message);
        idInput.focus();
      } else if (DIMENSIONS.includes(exc.param)) {
        setRatingsError(message);
      } else {
        result.classList.add("error");
        fill(result, el("p", { role: "alert" }, message));
      }
    } finally {
      submit.disabled = false;
    }
  });

  let signature = "";
  async function refresh() {
    const data = (await api("/admin/responses?limit=50")).data || [];
    const next = data.map((r) => r.response_id).join(",");
    if (next === signature) return;
    signature = next;
    recent.clear();
    for (const r of data) recent.set(r.response_id, r);
    const current = idInput.value.trim();
    fill(select,
      el("option", { value: "" },
        data.length ? `Choose one of ${data.length} recent answers…` : "No answers yet"),
      data.map((r) => el("option", { value: r.response_id },
        `${fmt.time(r.ts)} · ${r.model} · ${r.conversation_type} · ${r.response_id}`)));
    select.value = recent.has(current) ? current : "";
  }

  return { refresh, form };
}
