// Small SVG charts over a time axis (one column per minute), drawn with
// DOM APIs: stacked bars and lines. No library, no inline style: colours
// and fonts come from app.css through classes.
//
// A chart is drawn for a given width in CSS pixels and its viewBox has
// that width, so one unit is one pixel and 12 px text stays 12 px on a
// phone; the caller draws it again when its container changes width.
import { h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const HEIGHT = 210;
const FONT = 12; // px, as .chart-svg text in app.css
const INTERVALS = [5, 10, 15, 20, 30, 60]; // minutes between time labels

// s creates an SVG element. Attributes are presentation attributes
// (x, y, width, d...): never style or event handlers.
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "style" || k.startsWith("on")) throw new Error(`chart: attribute ${k} is not allowed`);
    if (k === "class") el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// niceStep is 1, 2 or 5 times a power of ten, at least x.
export function niceStep(x) {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5]) if (m * p >= x) return m * p;
  return 10 * p;
}

const r2 = (n) => Math.round(n * 100) / 100;
const textWidth = (t) => String(t).length * FONT * 0.62;

export function minuteLabel(iso) {
  return new Date(iso).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

// fmtMs writes a latency bucket's upper bound; -1 is "slower than the
// last bound".
export function fmtMs(v, bounds) {
  if (v === -1) return "> " + fmtMs(bounds[bounds.length - 1], bounds);
  return v >= 1000 ? `${v / 1000} s` : `${v} ms`;
}

// frame lays the plot out in a width: room on the left for the y labels,
// a line for the title above and one for the time labels below.
function frame(width, n, yLabels) {
  const left = Math.ceil(Math.max(...yLabels.map(textWidth), FONT)) + 10;
  const f = { width, left, right: 16, top: 26, bottom: 26 };
  f.plotW = Math.max(width - f.left - f.right, 60);
  f.plotH = HEIGHT - f.top - f.bottom;
  f.col = f.plotW / n;
  f.base = f.top + f.plotH;
  f.x = (i) => f.left + (i + 0.5) * f.col; // a minute's column centre
  return f;
}

function root(f, label, title) {
  return s("svg", { viewBox: `0 0 ${f.width} ${HEIGHT}`, class: "chart-svg", role: "img", "aria-label": label },
    s("title", {}, label),
    s("text", { x: 0, y: FONT + 2, class: "axis-title" }, title));
}

// yAxis draws the grid: ticks are [{y, label}].
function yAxis(f, ticks) {
  return s("g", { class: "axis axis-y" }, ticks.map((t) => [
    s("line", { x1: f.left, x2: f.left + f.plotW, y1: r2(t.y), y2: r2(t.y), class: "grid" }),
    t.label === "" ? null : s("text", { x: f.left - 6, y: r2(t.y), "text-anchor": "end", "dominant-baseline": "middle" }, t.label),
  ]));
}

// xAxis labels whole minutes of the clock (every 5, 10, 15… minutes, as
// many as fit the width).
function xAxis(f, minutes) {
  const room = textWidth(minuteLabel(minutes[0]?.at || new Date().toISOString())) + 14;
  const every = INTERVALS.find((n) => n * f.col >= room) || 60;
  const g = s("g", { class: "axis axis-x" },
    s("line", { x1: f.left, x2: f.left + f.plotW, y1: f.base, y2: f.base, class: "axis-line" }));
  minutes.forEach((m, i) => {
    const d = new Date(m.at);
    const x = f.x(i);
    if (d.getMinutes() % every !== 0 || x - room / 2 < 0 || x + room / 2 > f.width) return;
    g.append(s("line", { x1: r2(x), x2: r2(x), y1: f.base, y2: f.base + 4, class: "tick" }),
      s("text", { x: r2(x), y: f.base + FONT + 6, "text-anchor": "middle" }, minuteLabel(m.at)));
  });
  return g;
}

// stackedBars draws one bar per minute, its series stacked bottom up.
// series: [{key, label, cls}]; a minute's value of a series is m[key].
export function stackedBars(width, minutes, series, { title, label }) {
  const totals = minutes.map((m) => series.reduce((a, x) => a + (m[x.key] || 0), 0));
  const max = Math.max(1, ...totals);
  const step = Math.max(1, niceStep(max / 4));
  const top = Math.ceil(max / step) * step;
  const values = [];
  for (let v = 0; v <= top; v += step) values.push(v);
  const f = frame(width, minutes.length, values.map(String));
  const y = (v) => f.base - (v / top) * f.plotH;
  const barW = Math.max(1, Math.min(f.col * 0.72, 22));
  const bars = s("g", { class: "bars" });
  minutes.forEach((m, i) => {
    if (!totals[i]) return;
    const g = s("g", { class: "bar", dataset: { at: m.at, total: String(totals[i]) } },
      s("title", {}, `${minuteLabel(m.at)} — ${series.map((x) => `${m[x.key] || 0} ${x.label.toLowerCase()}`).join(", ")}`));
    let acc = 0;
    for (const x of series) {
      const v = m[x.key] || 0;
      if (!v) continue;
      g.append(s("rect", { x: r2(f.x(i) - barW / 2), y: r2(y(acc + v)), width: r2(barW), height: r2(y(acc) - y(acc + v)),
        class: ["seg", "fill-" + x.cls], dataset: { series: x.key, value: String(v) } }));
      acc += v;
    }
    bars.append(g);
  });
  const svg = root(f, label, title);
  svg.append(yAxis(f, values.map((v) => ({ y: y(v), label: String(v) }))), xAxis(f, minutes), bars);
  return svg;
}

// bucketLines draws values that are bucket upper bounds (bounds, plus -1
// for "slower than the last") as lines on a scale with one step per
// bucket. A minute without a value (null) breaks the line. A series may
// set its dots' radius r: later series are drawn on top, so a smaller r
// keeps an equal value of an earlier one visible around it.
export function bucketLines(width, minutes, bounds, series, { title, label }) {
  const level = (v) => {
    if (v === -1) return bounds.length;
    const i = bounds.findIndex((b) => v <= b);
    return i < 0 ? bounds.length : i;
  };
  let maxLevel = 0;
  for (const m of minutes) for (const x of series) if (m[x.key] !== null && m[x.key] !== undefined) maxLevel = Math.max(maxLevel, level(m[x.key]));
  const top = Math.min(bounds.length, Math.max(maxLevel + 1, 3));
  const levels = Array.from({ length: top + 1 }, (_, l) => (l < bounds.length ? bounds[l] : -1));
  const labels = levels.map((v) => fmtMs(v, bounds));
  const f = frame(width, minutes.length, labels);
  const y = (l) => f.base - ((l + 1) / (top + 1)) * f.plotH;
  const every = Math.ceil((FONT + 4) / (f.plotH / (top + 1)));
  const ticks = levels.map((v, l) => ({ y: y(l), label: (top - l) % every === 0 ? labels[l] : "" }));
  const lines = s("g", { class: "lines" });
  for (const x of series) {
    const g = s("g", { class: ["line", "line-" + x.cls], dataset: { series: x.key } });
    let d = "";
    let prev = false;
    minutes.forEach((m, i) => {
      const v = m[x.key];
      if (v === null || v === undefined) {
        prev = false;
        return;
      }
      const px = r2(f.x(i));
      const py = r2(y(level(v)));
      d += `${prev ? "L" : "M"}${px} ${py} `;
      prev = true;
      g.append(s("circle", { cx: px, cy: py, r: x.r || 3, class: "dot", dataset: { at: m.at, value: String(v) } },
        s("title", {}, `${minuteLabel(m.at)} — ${x.label} ${v === -1 ? fmtMs(v, bounds) : "≤ " + fmtMs(v, bounds)}`)));
    });
    if (d) g.prepend(s("path", { d: d.trim(), class: "stroke" }));
    lines.append(g);
  }
  const svg = root(f, label, title);
  svg.append(yAxis(f, ticks), xAxis(f, minutes), lines);
  return svg;
}

// legend lists the series with a swatch and a figure each.
export function legend(items) {
  return h("ul", { class: "legend" }, items.map((it) => h("li", { dataset: { series: it.key } },
    h("span", { class: ["swatch", "swatch-" + it.cls], "aria-hidden": "true" }),
    h("span", {}, it.label), " ", h("strong", { class: "legend-value" }, it.value))));
}
