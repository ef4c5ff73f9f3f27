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
  // Any depth: a helper may return [dt, dd] pairs, and an array is never text.
  for (const child of children.flat(Infinity)) {
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

/** A number in plain digits (never 7.5e-7), with at most `digits` significant ones. */
const plain = (v, digits) => v.toLocaleString("en-US", { maximumSignificantDigits: digits });

export const fmt = {
  int: (v) => (isNum(v) ? Math.round(v).toLocaleString("en-US") : dash),
  num: (v, digits = 1) => (isNum(v) ? v.toFixed(digits) : dash),
  pct: (v) => (isNum(v) ? `${(v * 100).toFixed(v >= 0.999 || v === 0 ? 0 : 1)}%` : dash),
  ms: (v) => (isNum(v) ? (v >= 1000 ? `${(v / 1000).toFixed(2)} s`
    : `${v < 10 && v % 1 ? v.toFixed(1) : Math.round(v)} ms`) : dash),
  /** A count on an axis, where a half-way tick may fall between whole numbers. */
  count: (v) => (isNum(v) ? (Number.isInteger(v) ? fmt.int(v) : plain(v, 2)) : dash),
  cost: (v) => {
    if (!isNum(v)) return dash;
    if (v === 0) return "$0";
    if (Math.abs(v) < 1) return `$${plain(v, 2)}`;
    return `$${v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
  },
  /** Tick labels for a cost axis up to `max`: short, one unit, no exponent; below a
   * thousandth of a dollar in millionths (µ$), which the chart's note explains. */
  costAxis: (max) => {
    if (max >= 0.001) return (v) => (v === 0 ? "$0" : `$${plain(v, 3)}`);
    return (v) => (v === 0 ? "0" : `${plain(v * 1e6, 3)} µ$`);
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
