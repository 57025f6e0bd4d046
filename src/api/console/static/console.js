// The console: sign-in, the banner that says when the ledger cannot answer,
// and the pages, one per place in the URL's fragment (#/ledger, #/users/ID).

import { Api, SignedOut, session } from "./api.js";
import { fill, h, on } from "./dom.js";
import { ledgerPage } from "./ledger.js";
import { userPage } from "./user.js";

const USER_ID = /^[A-Za-z0-9._-]{1,64}$/;
const $ = (id) => document.getElementById(id);
const banner = $("banner");
const view = $("view");
let current = null;
let admin = null;
let recoveredTimer = null;

function health(problem) {
  clearTimeout(recoveredTimer);
  if (problem) {
    const why = problem.type === "network-error"
      ? "the ledger cannot be reached"
      : `${problem.title || "Unavailable"}: ${problem.detail || ""} (${problem.type || problem.status})`;
    fill(banner, h("p", { class: "outage", role: "alert" },
      h("strong", {}, "The ledger cannot answer now. "), why, ". Retrying every few seconds…"));
  } else {
    fill(banner, h("p", { class: "recovered" }, "The ledger answers again."));
    recoveredTimer = setTimeout(() => fill(banner), 4000);
  }
}

const api = new Api({ health, signedOut: () => signedOut("The key was refused: sign in again.") });

function who() {
  const role = admin === true ? "admin key" : admin === false ? "read-only key" : "key accepted";
  fill($("who"), `Signed in: ${role}`);
}

const context = (signal) => ({
  api,
  signal,
  get admin() { return admin; },
  set admin(value) { admin = value; who(); },
});

function signedOut(message = "") {
  current?.abort();
  session.signOut();
  admin = null;
  fill(banner);
  fill(view);
  $("chrome").hidden = true;
  $("sign-in").hidden = false;
  fill($("sign-in-error"), message);
  $("api-key").focus();
}

function route() {
  current?.abort();
  if (!session.key()) return signedOut();
  $("sign-in").hidden = true;
  $("chrome").hidden = false;
  who();
  current = new AbortController();
  const ctx = context(current.signal);
  const match = /^#\/users\/([^/]*)$/.exec(location.hash);
  let page;
  if (match) {
    const userId = decodeURIComponent(match[1]);
    if (!USER_ID.test(userId)) {
      fill(view, h("h1", {}, "No such user"), h("p", { class: "error" }, "A user id is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'."));
      return undefined;
    }
    document.title = `${userId} · Ledger console`;
    page = userPage(view, userId, ctx);
  } else {
    document.title = "Ledger · Ledger console";
    page = ledgerPage(view, ctx);
  }
  return page.catch((error) => {
    if (error instanceof SignedOut || ctx.signal.aborted) return;
    fill(view, h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, String(error)));
  });
}

on($("sign-in-form"), "submit", async (event) => {
  event.preventDefault();
  const input = $("api-key");
  const key = input.value.trim();
  if (!key) return;
  const button = $("sign-in-button");
  button.disabled = true;
  fill($("sign-in-error"), "Checking the key…");
  session.signIn(key);
  try {
    await api.send("GET", "/v1/projections");
  } catch (error) {
    button.disabled = false;
    if (!(error instanceof SignedOut)) {
      session.signOut();
      fill($("sign-in-error"), "The ledger did not answer: try again.");
    }
    return;
  }
  button.disabled = false;
  input.value = "";
  fill($("sign-in-error"));
  if (!location.hash.startsWith("#/")) location.hash = "#/ledger";
  else route();
  $("main").focus();
});

on($("find-user"), "submit", (event) => {
  event.preventDefault();
  const input = $("find-user-id");
  const userId = input.value.trim();
  if (!USER_ID.test(userId)) {
    input.setCustomValidity("1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'");
    input.reportValidity();
    return;
  }
  input.setCustomValidity("");
  const target = `#/users/${encodeURIComponent(userId)}`;
  if (location.hash === target) route();
  else location.hash = target;
  $("main").focus();
});
on($("find-user-id"), "input", (event) => event.target.setCustomValidity(""));
on($("sign-out"), "click", () => signedOut("Signed out."));
// The skip link moves focus, not the page.
window.addEventListener("hashchange", () => location.hash === "#main" || route());
route();
