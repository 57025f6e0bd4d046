// A user's page: balances, holds, grants, allowances, a chart of each balance
// over time, the timeline, the audit's verdict and the explanation.

import { segment } from "./api.js";
import { balanceChart } from "./chart.js";
import { fill, h, number, on, problemText, section, show, table, time } from "./dom.js";

/** Timeline events per page. */
export const PAGE = 25;
/** The chart draws at most the latest this many events. */
const HISTORY_MAX = 20000;
/** How often the page looks for new events. */
const POLL_SECONDS = 5;
const BALANCES = [
  ["free_credits", "Credits"],
  ["free_chat_messages", "Chat messages"],
];
const BALANCE_NAMES = Object.fromEntries(BALANCES);

const balanceName = (name) => BALANCE_NAMES[name] ?? name;
const code = (text) => (text === null || text === undefined ? "—" : h("code", {}, text));
const text = (value) => (value === null || value === undefined || value === "" ? "—" : String(value));

function actor(metadata) {
  if (!metadata) return "—";
  if (metadata.stripe_event_id) return `Stripe ${metadata.stripe_event_id}`;
  return [metadata.actor_role, metadata.actor_key_id].filter(Boolean).join(" ") || "—";
}

function reason(event) {
  const data = event.data || {};
  if (data.reason) return data.reason;
  if (event.type === "PlanChanged") return [data.level, data.renewal_period].filter(Boolean).join(" ");
  if (data.sku) return `SKU ${data.sku}`;
  return "";
}

/** What an event moved: a number of credits or messages, or money (in its smallest unit). */
function amount(event) {
  const data = event.data || {};
  if (data.amount === undefined || data.amount === null) return "—";
  return data.currency ? `${number(data.amount)} ${String(data.currency).toUpperCase()} (smallest unit)` : number(data.amount);
}

/**
 * Fills `body` from one read: absent (the section removed) when the route
 * itself is not there (404 `not-found`: a capability this ledger lacks), the
 * problem in words on any other failure.
 */
async function load(ctx, part, path, render) {
  const answer = await ctx.api.get(path, { signal: ctx.signal });
  if (answer.status === 404 && answer.body.type === "not-found") part.element.remove();
  else if (!answer.ok) show(part.body, problemText(answer.body));
  else show(part.body, render(answer.body));
}

function balances(user) {
  const rows = BALANCES.map(([name, label]) => ({ name, label }));
  return [
    h("p", {}, `Level ${user.level}`, user.renewal_period ? `, renewal ${user.renewal_period}` : "",
      `; ${number(user.version)} events, last at position ${number(user.position)}, `, time(user.updated_at), "."),
    table("Balances", [
      ["Balance", (r) => r.label],
      ["Available", (r) => number(user[r.name])],
      ["Held", (r) => number(user[`${r.name}_held`])],
      ["Next expiry", (r) => (user[`${r.name}_next_expiry_at`]
        ? [number(user[`${r.name}_next_expiry_amount`]), " at ", time(user[`${r.name}_next_expiry_at`])]
        : "nothing expires")],
    ], rows),
  ];
}

function explanation(body) {
  return [
    BALANCES.map(([name, label]) => {
      const explained = body.balances?.[name];
      return explained ? h("p", {}, h("strong", {}, `${label}: `), explained.summary) : null;
    }),
    h("h3", {}, "Latest changes"),
    body.recent.length === 0
      ? h("p", { class: "empty" }, "None.")
      : h("ol", { class: "changes", reversed: true },
        body.recent.map((change) => h("li", {}, time(change.recorded_at), " ", change.sentence,
          change.request_id ? [" ", h("span", { class: "muted" }, "request "), code(change.request_id)] : ""))),
  ];
}

function audit(body) {
  if (body.consistent) {
    return h("p", { class: "verdict ok" }, h("strong", {}, "Consistent: "),
      `the projected row equals a replay of the history at position ${number(body.position)}.`);
  }
  return [
    h("p", { class: "verdict bad", role: "alert" }, h("strong", {}, "Inconsistent: "),
      `the projected row differs from a replay of the history at position ${number(body.position)}.`),
    table("Differences", [
      ["Field", (d) => code(d.field)],
      ["Projected", (d) => text(JSON.stringify(d.projected))],
      ["Replayed", (d) => text(JSON.stringify(d.replayed))],
    ], body.differences),
  ];
}

const holdColumns = [
  ["Hold", (x) => code(x.id)], ["Balance", (x) => balanceName(x.balance)],
  ["Amount", (x) => number(x.amount)], ["Reason", (x) => text(x.reason)],
  ["Placed", (x) => time(x.created_at)], ["Expires", (x) => time(x.expires_at)],
];
const grantColumns = [
  ["Grant", (x) => code(x.id)], ["Balance", (x) => balanceName(x.balance)],
  ["Amount", (x) => number(x.amount)], ["Remaining", (x) => number(x.remaining)],
  ["Held", (x) => number(x.held)], ["Priority", (x) => number(x.priority)],
  ["Expires", (x) => (x.expires_at ? time(x.expires_at) : "never")],
  ["Source", (x) => x.source], ["Reason", (x) => text(x.reason)],
];
const allowanceColumns = [
  ["Balance", (x) => balanceName(x.balance)], ["Amount", (x) => number(x.amount)],
  ["Every", (x) => x.period], ["Next reset", (x) => time(x.next_reset_at)],
];
const timelineColumns = [
  ["Version", (e) => number(e.version)], ["Recorded", (e) => time(e.recorded_at)],
  ["Event", (e) => e.type], ["Amount", amount],
  ["Credits after", (e) => number(e.user?.free_credits)],
  ["Chat messages after", (e) => number(e.user?.free_chat_messages)],
  ["Actor", (e) => actor(e.metadata)], ["Reason", (e) => text(reason(e))],
  ["Request id", (e) => code(e.metadata?.request_id)],
];

async function chart(ctx, part, base, user) {
  const start = Math.max(0, user.version - HISTORY_MAX);
  const loading = part.body.querySelector(".loading");
  const answer = await ctx.api.all(`${base}/events`, "after_version", {
    signal: ctx.signal,
    start,
    progress: (n) => loading && (loading.textContent = `Loading the history: ${number(n)} events…`),
  });
  if (!answer.ok) return show(part.body, problemText(answer.body));
  const items = answer.body.items;
  if (items.length === 0) return show(part.body, h("p", { class: "empty" }, "No events."));
  return show(part.body, BALANCES.map(([name, label]) => balanceChart({
    id: `chart-${name}`,
    title: label,
    total: start + items.length,
    steps: items.map((item) => ({ at: Date.parse(item.recorded_at), value: item.user[name] })),
  })));
}

/** The timeline, newest first, a page at a time through the API's own paging. */
function timeline(ctx, part, base, state) {
  const label = h("p", { class: "pager-label", "aria-live": "polite" });
  const newer = h("button", { type: "button", class: "newer" }, "Newer");
  const older = h("button", { type: "button", class: "older" }, "Older");
  const rows = h("div", { class: "rows" });
  const pages = () => Math.max(1, Math.ceil(state.user.version / PAGE));
  const render = async () => {
    const top = state.user.version - state.page * PAGE;
    const after = Math.max(0, top - PAGE);
    newer.disabled = state.page === 0;
    older.disabled = state.page >= pages() - 1;
    label.textContent = `Page ${number(state.page + 1)} of ${number(pages())}: versions ${number(after + 1)}–${number(top)}`;
    rows.setAttribute("aria-busy", "true");
    const answer = await ctx.api.get(`${base}/events?after_version=${after}&limit=${Math.max(top - after, 1)}`,
      { signal: ctx.signal });
    rows.setAttribute("aria-busy", "false");
    if (!answer.ok) return fill(rows, problemText(answer.body));
    return fill(rows, table("Timeline, newest first", timelineColumns, answer.body.items.slice().reverse()));
  };
  const go = (by) => {
    state.page = Math.min(Math.max(state.page + by, 0), pages() - 1);
    render();
  };
  on(newer, "click", () => go(-1));
  on(older, "click", () => go(1));
  show(part.body, h("nav", { class: "pager", "aria-label": "Timeline pages" }, newer, label, older), rows);
  return render();
}

function render(ctx, view, userId, state) {
  const base = `/v1/users/${segment(userId)}`;
  const parts = {
    balances: section("balances", "Balances"),
    explanation: section("explanation", "Why these balances"),
    chart: section("chart", "Balances over time"),
    holds: section("holds", "Open holds"),
    grants: section("grants", "Active grants"),
    allowances: section("allowances", "Allowances"),
    audit: section("audit", "Audit"),
    timeline: section("timeline", "Timeline"),
  };
  fill(view, h("h1", {}, "User ", h("code", {}, userId)), Object.values(parts).map((p) => p.element));
  show(parts.balances.body, balances(state.user));
  return Promise.allSettled([
    load(ctx, parts.explanation, `${base}/explain`, explanation),
    chart(ctx, parts.chart, base, state.user),
    load(ctx, parts.holds, `${base}/holds?status=open&limit=100`,
      (b) => table("Open holds", holdColumns, b.items, "No open holds.")),
    load(ctx, parts.grants, `${base}/grants?status=active&limit=100`,
      (b) => table("Active grants", grantColumns, b.items, "No active grants.")),
    load(ctx, parts.allowances, `${base}/allowances`,
      (b) => table("Allowances", allowanceColumns, b.items, "No allowances.")),
    load(ctx, parts.audit, `/v1/audit/users/${segment(userId)}`, audit),
    timeline(ctx, parts.timeline, base, state),
  ]);
}

/** Shows the user `userId` in `view`, and keeps it current until `ctx.signal` aborts. */
export async function userPage(view, userId, ctx) {
  const state = { user: null, page: 0, problem: undefined };
  fill(view, h("h1", {}, "User ", h("code", {}, userId)), h("p", { class: "loading" }, "Loading…"));
  for (;;) {
    const answer = await ctx.api.get(`/v1/users/${segment(userId)}`, { signal: ctx.signal });
    if (!answer.ok) {
      if (state.user !== null || state.problem !== answer.body.detail) {
        fill(view, h("h1", {}, "User ", h("code", {}, userId)), problemText(answer.body));
      }
      state.user = null;
      state.problem = answer.body.detail;
    } else if (state.user === null || answer.body.version !== state.user.version) {
      state.user = answer.body;
      state.page = Math.min(state.page, Math.ceil(state.user.version / PAGE) - 1);
      render(ctx, view, userId, state);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_SECONDS * 1000));
    if (ctx.signal.aborted) return;
  }
}
