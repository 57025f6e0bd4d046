// Building the page: every value from the ledger becomes a text node, never markup.

/**
 * An element with attributes and children. Strings and numbers become text
 * nodes (textContent), null and false are skipped, arrays are flattened.
 * Attributes starting with "on" are refused: listeners are added with `on`.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith("on")) throw new Error(`use on() for ${name}`);
    if (value === null || value === undefined || value === false) continue;
    if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

export function on(element, type, listener) {
  element.addEventListener(type, listener);
  return element;
}

/** Replaces what `parent` holds with `children`. */
export function fill(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

const NUMBER = new Intl.NumberFormat("en-US");

export function number(value) {
  if (value === null || value === undefined) return "—";
  return typeof value === "number" ? NUMBER.format(value) : String(value);
}

/** A time as the ledger gives it (RFC 3339, UTC), shortened to the second. */
export function time(value) {
  if (!value) return "—";
  const shown = String(value).replace("T", " ").replace(/\.\d+Z$/, "Z");
  return h("time", { datetime: value, title: value }, shown);
}

export function seconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 60) return `${Math.round(value)} s`;
  const minutes = Math.floor(value / 60);
  return `${minutes} min ${Math.round(value - minutes * 60)} s`;
}

/**
 * A table of `rows`, one column per [heading, cell(row)] pair; on a narrow
 * screen each row stacks into a card, its cells labelled by their headings.
 */
export function table(caption, columns, rows, empty = "None.") {
  if (rows.length === 0) return h("p", { class: "empty" }, empty);
  const head = h("tr", {}, columns.map(([heading]) => h("th", { scope: "col" }, heading)));
  const body = rows.map((row) =>
    h("tr", {}, columns.map(([heading, cell]) => h("td", { "data-label": heading }, h("span", {}, cell(row))))),
  );
  return h(
    "div",
    { class: "table" },
    h("table", {}, h("caption", { class: "visually-hidden" }, caption), h("thead", {}, head),
      h("tbody", {}, body)),
  );
}

/** A section with its heading, whose body is filled later (loading until then). */
export function section(id, title, ...intro) {
  const body = h("div", { class: "body", "aria-busy": "true" }, h("p", { class: "loading" }, "Loading…"));
  const element = h("section", { id, "aria-labelledby": `${id}-title` },
    h("h2", { id: `${id}-title` }, title), intro, body);
  return { element, body };
}

/** Fills a section's body: done loading. */
export function show(body, ...children) {
  body.setAttribute("aria-busy", "false");
  fill(body, ...children);
}

/** A problem (RFC 9457) as the section's content, in words. */
export function problemText(problem) {
  const title = problem.title || `HTTP ${problem.status}`;
  return h("p", { class: "error", role: "alert" }, `${title}: ${problem.detail || ""}`,
    problem.type ? ` (${problem.type})` : "");
}
