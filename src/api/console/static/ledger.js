// The ledger's page: projections and a rebuild's live progress, the chain's
// head, Stripe events, webhook endpoints and their failing deliveries.

import { newIdempotencyKey, segment } from "./api.js";
import { fill, h, number, on, problemText, seconds, section, show, table, time } from "./dom.js";

/** How often the projections are asked for: often while a rebuild runs. */
const POLL_SECONDS = 2;
const POLL_REBUILDING_SECONDS = 0.5;
/** How often the admin's lists (Stripe, webhooks) are read again. */
const LISTS_SECONDS = 15;

const code = (value) => (value === null || value === undefined ? "—" : h("code", {}, value));
const text = (value) => (value === null || value === undefined || value === "" ? "—" : String(value));
const sleep = (s) => new Promise((resolve) => setTimeout(resolve, s * 1000));

function progress(item) {
  const rebuild = item.rebuild;
  const lines = [];
  if (item.status === "failed") {
    lines.push(h("p", { class: "verdict bad", role: "alert" }, "Failed: ", text(JSON.stringify(item.error))));
  }
  if (item.status === "rebuilding" && rebuild) {
    const share = rebuild.target ? Math.floor((100 * (rebuild.events ?? 0)) / rebuild.target) : null;
    lines.push(
      h("p", { class: "rebuild-progress" }, h("strong", {}, "Rebuilding: "), `phase ${rebuild.phase}; `,
        `${number(rebuild.events)} of ${number(rebuild.target)} events`, share === null ? "" : ` (${share}%)`,
        `, ${number(rebuild.users)} users; ${number(rebuild.events_per_second)} events/s; `,
        `about ${seconds(rebuild.eta_seconds)} left.`),
      h("progress", { max: rebuild.target || 1, value: rebuild.events ?? 0, "aria-label": "Rebuild progress" }),
    );
  } else if (rebuild) {
    lines.push(h("p", { class: "last-rebuild" }, `Last rebuild: ${rebuild.phase}`,
      rebuild.events === undefined || rebuild.events === null ? "" : `, ${number(rebuild.events)} events`,
      rebuild.events_per_second ? ` at ${number(rebuild.events_per_second)} events/s` : "",
      rebuild.error ? `: ${rebuild.error}` : "", "."));
  }
  if (item.rebuild_requested) {
    lines.push(h("p", { class: "requested" }, "A rebuild is requested: the projector starts it shortly."));
  }
  if (item.status === "running" && item.lag === 0) {
    lines.push(h("p", { class: "verdict ok live" }, h("strong", {}, "Live: "), "every event recorded is applied."));
  }
  return lines;
}

const projectionColumns = [
  ["Projection", (p) => p.name], ["Status", (p) => h("span", { class: `status ${p.status}` }, p.status)],
  ["Position", (p) => number(p.position)], ["Head", (p) => number(p.head)], ["Lag", (p) => number(p.lag)],
  ["Version", (p) => code(p.version)],
];

function chainHead(body) {
  return h("dl", { class: "facts" },
    h("dt", {}, "Position"), h("dd", {}, number(body.position)),
    h("dt", {}, "Hash"), h("dd", {}, code(body.hash)),
    h("dt", {}, "Recorded"), h("dd", {}, time(body.recorded_at)));
}

/** The rebuild button and what became of the last click. */
function rebuildControl(ctx, after) {
  const message = h("div", { class: "action-result", "aria-live": "polite" });
  const button = h("button", { type: "button", class: "action", id: "rebuild" }, "Rebuild the users table");
  on(button, "click", async () => {
    button.disabled = true;
    fill(message, "Asking for a rebuild…");
    try {
      const answer = await ctx.api.send("POST", "/v1/projections/users/rebuild", undefined,
        { idempotencyKey: newIdempotencyKey("rebuild") });
      fill(message, answer.ok ? "Rebuild requested." : problemText(answer.body));
    } catch {
      fill(message, h("p", { class: "error", role: "alert" }, "The ledger did not answer: try again."));
    } finally {
      button.disabled = false;
      after();
    }
  });
  return h("div", { class: "actions" }, button, message);
}

function stripePart(ctx, part) {
  const filter = h("select", { id: "stripe-status" },
    ["", "applied", "ignored", "rejected", "waiting"].map((s) => h("option", { value: s }, s || "any")));
  const rows = h("div", { class: "rows" });
  const more = h("button", { type: "button", hidden: true }, "More");
  const items = [];
  let next = null;
  const columns = [
    ["Received", (e) => time(e.received_at)], ["Event", (e) => code(e.id)], ["Type", (e) => e.type],
    ["Object", (e) => code(e.object_id)], ["Outcome", (e) => h("span", { class: `status ${e.status}` }, e.status)],
    ["Why", (e) => text(e.error)],
    ["User", (e) => (e.user_id ? h("a", { href: `#/users/${segment(e.user_id)}` }, e.user_id) : "—")],
  ];
  const read = async (fresh) => {
    const status = filter.value ? `&status=${filter.value}` : "";
    const after = !fresh && next ? `&after=${encodeURIComponent(next)}` : "";
    const answer = await ctx.api.get(`/v1/stripe/events?limit=100${status}${after}`, { signal: ctx.signal });
    if (answer.status === 404 || answer.status === 403) return part.element.remove();
    if (!answer.ok) return fill(rows, problemText(answer.body));
    if (fresh) items.length = 0;
    items.push(...answer.body.items);
    next = answer.body.next;
    more.hidden = next === null;
    return fill(rows, table("Stripe events, oldest first", columns, items, "No Stripe events received."));
  };
  on(filter, "change", () => read(true));
  on(more, "click", () => read(false));
  show(part.body, h("p", { class: "controls" }, h("label", { for: "stripe-status" }, "Outcome "), filter), rows, more);
  return () => read(true);
}

/** `say` tells of a retry's outcome where the next refresh leaves it. */
function deliveries(ctx, endpoint, refresh, say) {
  const rows = h("div", { class: "rows" }, h("p", { class: "loading" }, "Loading…"));
  const last = (d) => d.attempts?.[d.attempts.length - 1];
  const retry = (d) => {
    const button = h("button", { type: "button", class: "action retry" }, "Retry");
    on(button, "click", async () => {
      button.disabled = true;
      const answer = await ctx.api.send("POST", `/v1/webhook-deliveries/${segment(d.id)}/retry`, undefined,
        { idempotencyKey: newIdempotencyKey("retry") }).catch(() => null);
      say(answer?.ok ? [code(d.id), " queued again."]
        : problemText(answer?.body ?? { title: "No answer", detail: "try again" }));
      button.disabled = false;
      refresh();
    });
    return button;
  };
  const columns = [
    ["Delivery", (d) => code(d.id)], ["Type", (d) => d.type],
    ["User", (d) => h("a", { href: `#/users/${segment(d.user_id)}` }, d.user_id)],
    ["Attempts", (d) => number(d.attempts?.length)],
    ["Last attempt", (d) => (last(d) ? [time(last(d).attempted_at), " ", text(last(d).http_status ?? last(d).error)] : "—")],
    ...(ctx.admin ? [["Action", retry]] : []),
  ];
  ctx.api.get(`/v1/webhook-endpoints/${segment(endpoint.id)}/deliveries?status=failed&limit=100`, { signal: ctx.signal })
    .then((answer) => fill(rows, answer.ok
      ? table(`Failed deliveries to ${endpoint.url}`, columns, answer.body.items, "No failed deliveries.")
      : problemText(answer.body)))
    .catch(() => {});
  return rows;
}

function webhooksPart(ctx, part) {
  const notice = h("p", { class: "notice", "aria-live": "polite" });
  const say = (what) => fill(notice, what);
  const read = async () => {
    const answer = await ctx.api.get("/v1/webhook-endpoints?limit=100", { signal: ctx.signal });
    if (answer.status === 404 || answer.status === 403) return part.element.remove();
    if (!answer.ok) return show(part.body, problemText(answer.body));
    const endpoints = answer.body.items;
    if (endpoints.length === 0) return show(part.body, h("p", { class: "empty" }, "No webhook endpoints."));
    return show(part.body, notice, endpoints.map((endpoint) => h("article", { class: "endpoint" },
      h("h3", {}, code(endpoint.url)),
      h("p", {}, text(endpoint.description), "; ",
        endpoint.disabled ? `disabled (${text(endpoint.disabled_reason)})`
          : endpoint.failing_since ? ["failing since ", time(endpoint.failing_since)] : "delivering"),
      deliveries(ctx, endpoint, read, say))));
  };
  return read;
}

/** Shows the ledger in `view`, and keeps it current until `ctx.signal` aborts. */
export async function ledgerPage(view, ctx) {
  const projections = section("projections", "Projections");
  const status = h("div", { class: "rows" }, h("p", { class: "loading" }, "Loading…"));
  const chain = section("chain", "Chain head", h("p", { class: "hint" }, "Keep it somewhere else, as a witness."));
  const stripe = section("stripe", "Stripe events");
  const webhooks = section("webhooks", "Webhook endpoints");
  fill(view, h("h1", {}, "Ledger"), projections.element, chain.element, stripe.element, webhooks.element);
  let wake = null;
  const soon = () => wake?.();
  const control = rebuildControl(ctx, soon);
  show(projections.body, status);
  let lists = null;
  let listsAt = 0;
  let fast = false;
  while (!ctx.signal.aborted) {
    const [answer, head] = await Promise.all([
      ctx.api.get("/v1/projections", { signal: ctx.signal }),
      ctx.admin === false ? null : ctx.api.get("/v1/chain/head", { signal: ctx.signal }),
    ]);
    if (head?.status === 403) ctx.admin = false;
    else if (head?.ok) ctx.admin = true;
    if (answer.ok) {
      const items = answer.body.items;
      fill(status, table("Projections", projectionColumns, items), items.map(progress));
      fast = items.some((p) => p.status === "rebuilding" || p.rebuild_requested);
    } else {
      fill(status, problemText(answer.body));
    }
    if (ctx.admin === false) {
      for (const part of [chain, stripe, webhooks]) part.element.remove();
      control.remove();
      if (!view.querySelector(".read-only")) {
        view.querySelector("h1").after(h("p", { class: "read-only" }, "This key reads only: actions are hidden."));
      }
    } else if (ctx.admin) {
      if (!control.isConnected) projections.element.append(control);
      if (head.ok) show(chain.body, chainHead(head.body));
      if (lists === null) lists = [stripePart(ctx, stripe), webhooksPart(ctx, webhooks)];
      if (Date.now() - listsAt > LISTS_SECONDS * 1000) {
        listsAt = Date.now();
        lists.forEach((read) => read().catch(() => {}));
      }
    }
    await Promise.race([sleep(fast ? POLL_REBUILDING_SECONDS : POLL_SECONDS), new Promise((r) => { wake = r; })]);
  }
}
