// A balance over time, drawn as SVG from the states of the user's history.

import { h, number } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
/** At most this many points per line: readable, and cheap, whatever the history. */
export const MAX_POINTS = 500;
// The drawing's own units: stretched to the box it is given (labels are HTML
// beside it, so no text is stretched with it).
const WIDTH = 1000;
const HEIGHT = 200;
const LEFT = 2;
const RIGHT = 2;
const TOP = 6;
const BOTTOM = 2;

/**
 * At most `max` of `points` (each `{x, y}`, in order): in each of max/4
 * buckets, its first and last points and its lowest and highest, so the
 * line keeps its extremes and its ends.
 */
export function downsample(points, max = MAX_POINTS) {
  if (points.length <= max) return points;
  const buckets = Math.floor(max / 4);
  const size = points.length / buckets;
  const kept = [];
  for (let bucket = 0; bucket < buckets; bucket += 1) {
    const start = Math.floor(bucket * size);
    const end = bucket === buckets - 1 ? points.length : Math.floor((bucket + 1) * size);
    let low = start;
    let high = start;
    for (let i = start; i < end; i += 1) {
      if (points[i].y < points[low].y) low = i;
      if (points[i].y > points[high].y) high = i;
    }
    const chosen = [...new Set([start, low, high, end - 1])].sort((a, b) => a - b);
    for (const i of chosen) kept.push(points[i]);
  }
  return kept;
}

function svg(tag, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

function scale(low, high, from, to) {
  const span = high - low;
  return (value) => (span === 0 ? (from + to) / 2 : from + ((value - low) / span) * (to - from));
}

const shortTime = (ms) => new Date(ms).toISOString().replace("T", " ").replace(/:\d\d\.\d+Z$/, "Z");

/**
 * A chart of one balance: `steps` are `{at, value}` (a time in ms, the
 * balance after an event; null counts as 0, as it spends), oldest first.
 */
export function balanceChart({ id, title, steps, total }) {
  const all = steps.map((step, index) => ({ x: step.at, y: step.value ?? 0, index }));
  const shown = downsample(all);
  const lowest = all.reduce((m, p) => Math.min(m, p.y), Infinity);
  const high = all.reduce((m, p) => Math.max(m, p.y), -Infinity);
  const low = Math.min(lowest, 0);
  const first = all[0].x;
  const last = all[all.length - 1].x;
  const byTime = last > first;
  const x = byTime
    ? scale(first, last, LEFT, WIDTH - RIGHT)
    : scale(0, Math.max(all.length - 1, 1), LEFT, WIDTH - RIGHT);
  const y = scale(low, high, HEIGHT - BOTTOM, TOP);
  const coordinates = shown.map((p) => `${x(byTime ? p.x : p.index).toFixed(1)},${y(p.y).toFixed(1)}`);

  const captionId = `${id}-caption`;
  const drawing = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-labelledby": captionId,
    preserveAspectRatio: "none",
    class: "chart",
  });
  drawing.append(
    svg("title", {}, title),
    svg("line", { class: "axis", x1: 0, y1: HEIGHT - BOTTOM, x2: WIDTH, y2: HEIGHT - BOTTOM }),
    svg("line", { class: "axis", x1: LEFT, y1: 0, x2: LEFT, y2: HEIGHT }),
    svg("polyline", { class: "line", points: coordinates.join(" ") }),
  );

  const events = total > all.length
    ? `the last ${number(all.length)} of ${number(total)} events`
    : `${number(all.length)} events`;
  const points = shown.length === all.length
    ? "one point per event"
    : `${number(shown.length)} points shown`;
  const latest = all[all.length - 1].y;
  const caption = `${title}: ${events}, ${points}; now ${number(latest)}, lowest ${number(lowest)}, highest ${number(high)}.`;
  return h(
    "figure",
    { class: "balance-chart", id, "data-events": all.length, "data-points": shown.length },
    h("div", { class: "plot" },
      h("div", { class: "y-labels", "aria-hidden": "true" }, h("span", {}, number(high)), h("span", {}, number(low))),
      drawing),
    h("div", { class: "x-labels", "aria-hidden": "true" }, h("span", {}, shortTime(first)), h("span", {}, shortTime(last))),
    h("figcaption", { id: captionId }, caption),
  );
}
