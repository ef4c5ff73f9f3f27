// Small DOM and formatting helpers. Data only ever reaches the page as text nodes.

/** Create an element: el("td", {className: "num", dataset: {col: "x"}}, "text", child). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (key in node && !key.startsWith("aria") && key !== "role") node[key] = value;
    else if (value !== false) node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace all children of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

const dash = "–";
const isNum = (v) => typeof v === "number" && Number.isFinite(v);

export const fmt = {
  int: (v) => (isNum(v) ? Math.round(v).toLocaleString("en-US") : dash),
  num: (v, digits = 1) => (isNum(v) ? v.toFixed(digits) : dash),
  pct: (v) => (isNum(v) ? `${(v * 100).toFixed(v >= 0.999 || v === 0 ? 0 : 1)}%` : dash),
  ms: (v) => (isNum(v) ? (v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${Math.round(v)} ms`) : dash),
  cost: (v) => {
    if (!isNum(v)) return dash;
    if (v === 0) return "$0";
    if (Math.abs(v) < 0.01) return `$${v.toPrecision(2)}`;
    return `$${v.toFixed(v < 10 ? 3 : 2)}`;
  },
  time: (ts) => (isNum(ts) ? new Date(ts * 1000).toLocaleTimeString([], { hour12: false }) : dash),
  datetime: (ts) =>
    isNum(ts) ? new Date(ts * 1000).toLocaleString([], { hour12: false }) : dash,
  clock: (seconds) => {
    if (!isNum(seconds)) return dash;
    const s = Math.max(0, Math.ceil(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const pad = (n) => String(n).padStart(2, "0");
    return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${pad(m)}:${pad(s % 60)}`;
  },
  dash,
};
