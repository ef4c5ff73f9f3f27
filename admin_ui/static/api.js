// Admin API client. The admin token lives in sessionStorage only and travels in the
// Authorization header, never in a URL. A 401 shows a token prompt; calls wait for it.
import { el, fill } from "./dom.js";

const KEY = "gatewise.adminToken";

export class ApiError extends Error {
  constructor(status, message, param = null, code = null) {
    super(message);
    this.status = status;
    this.param = param;
    this.code = code;
  }
}

function storedToken() {
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
}

function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(KEY, token);
    else sessionStorage.removeItem(KEY);
  } catch {
    /* storage disabled: the token lasts as long as the page */
  }
  memoryToken = token;
}

let memoryToken = storedToken();
let pendingPrompt = null;

/** Show the token form in #auth and resolve once the operator submits a token. */
function askForToken(rejected) {
  if (pendingPrompt) return pendingPrompt;
  const host = document.getElementById("auth");
  pendingPrompt = new Promise((resolve) => {
    const input = el("input", {
      id: "admin-token",
      type: "password",
      name: "token",
      required: true,
      autocomplete: "off",
      spellcheck: false,
      "aria-describedby": "admin-token-help",
    });
    const form = el(
      "form",
      { className: "panel auth", "aria-labelledby": "auth-h" },
      el("h2", { id: "auth-h" }, "Admin token required"),
      el(
        "p",
        { id: "admin-token-help" },
        rejected
          ? "That token was rejected. Enter the admin token configured as server.admin_token."
          : "The admin API needs the token configured as server.admin_token. It is kept in " +
              "this browser tab only (sessionStorage).",
      ),
      el("label", { htmlFor: "admin-token" }, "Admin token"),
      el("div", { className: "row" }, input, el("button", { type: "submit" }, "Unlock")),
    );
    if (rejected) form.classList.add("rejected");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) {
        input.focus();
        return;
      }
      storeToken(token);
      fill(host);
      pendingPrompt = null;
      resolve(token);
    });
    fill(host, form);
    input.focus();
  });
  return pendingPrompt;
}

async function errorFrom(response) {
  let message = `${response.status} ${response.statusText}`;
  let param = null;
  let code = null;
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      param = body.error.param ?? null;
      code = body.error.code ?? null;
    }
  } catch {
    /* not JSON */
  }
  return new ApiError(response.status, message, param, code);
}

/** Call the admin API and return its JSON; throws ApiError with the server's message. */
export async function api(path, { method = "GET", body } = {}) {
  for (;;) {
    if (pendingPrompt) await pendingPrompt;
    const headers = { Accept: "application/json" };
    if (memoryToken) headers.Authorization = `Bearer ${memoryToken}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const sent = memoryToken;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "same-origin",
      });
    } catch (exc) {
      throw new ApiError(0, `The gateway cannot be reached (${exc.message}).`);
    }
    if (response.status === 401) {
      // Another call may already have replaced a stale token: just retry with it.
      if (memoryToken && memoryToken !== sent) continue;
      if (sent) storeToken(null);
      await askForToken(Boolean(sent));
      continue;
    }
    if (!response.ok) throw await errorFrom(response);
    return response.json();
  }
}

/** True while the token prompt is waiting for the operator. */
export const waitingForToken = () => pendingPrompt !== null;

/** Show or hide the page's error banner (#error). */
export function showError(message) {
  const banner = document.getElementById("error");
  if (!banner) return;
  banner.textContent = message || "";
  banner.hidden = !message;
}
