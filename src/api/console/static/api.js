// The JSON API, as the console asks it: the key from session storage as a
// bearer key (never in a URL), reads retried while the ledger cannot answer.

const KEY = "ledger.console.key";

/** Seconds between retries of a read while the ledger cannot answer. */
const RETRY_MIN = 1;
const RETRY_MAX = 5;

export class SignedOut extends Error {}

export const session = {
  key: () => sessionStorage.getItem(KEY),
  signIn: (key) => sessionStorage.setItem(KEY, key),
  signOut: () => sessionStorage.removeItem(KEY),
};

/** What an answer was: its status, its JSON body (a problem on failure). */
export class Answer {
  constructor(status, body) {
    this.status = status;
    this.body = body;
  }

  get ok() {
    return this.status >= 200 && this.status < 300;
  }
}

function wait(seconds, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, seconds * 1000);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

async function body(response) {
  const text = await response.text();
  if (!text) return {};
  try {
    return JSON.parse(text);
  } catch {
    return { status: response.status, title: `HTTP ${response.status}`, detail: text.slice(0, 200) };
  }
}

/**
 * The API, reporting through `health(problem | null)` when the ledger cannot
 * answer (a problem to show) and when it answers again (null), and through
 * `signedOut()` when the key is refused.
 */
export class Api {
  constructor({ health, signedOut }) {
    this.health = health;
    this.signedOut = signedOut;
    this.down = false;
  }

  async send(method, path, payload, { signal, idempotencyKey } = {}) {
    const key = session.key();
    if (!key) throw new SignedOut();
    const headers = { Authorization: `Bearer ${key}`, Accept: "application/json" };
    if (payload !== undefined) headers["Content-Type"] = "application/json";
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    const response = await fetch(path, {
      method,
      headers,
      body: payload === undefined ? undefined : JSON.stringify(payload),
      signal,
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
    const answer = new Answer(response.status, await body(response));
    answer.retryAfter = Number(response.headers.get("Retry-After")) || RETRY_MIN;
    if (answer.status === 401) {
      this.signedOut();
      throw new SignedOut();
    }
    return answer;
  }

  /**
   * A read, retried for as long as the ledger cannot answer (503, or no
   * answer at all), until it does or `signal` aborts: the page says so
   * meanwhile, and recovers by itself.
   */
  async get(path, { signal } = {}) {
    let delay = RETRY_MIN;
    for (;;) {
      let answer;
      try {
        answer = await this.send("GET", path, undefined, { signal });
      } catch (error) {
        if (error instanceof SignedOut || signal?.aborted) throw error;
        this.#unavailable({ status: 0, title: "No answer", detail: "the ledger cannot be reached", type: "network-error" });
        await wait(delay, signal);
        delay = Math.min(delay * 2, RETRY_MAX);
        continue;
      }
      if (answer.status === 503) {
        this.#unavailable(answer.body);
        await wait(Math.min(Math.max(answer.retryAfter, delay), RETRY_MAX), signal);
        delay = Math.min(delay * 2, RETRY_MAX);
        continue;
      }
      if (this.down) {
        this.down = false;
        this.health(null);
      }
      return answer;
    }
  }

  /** Every item of a list after `start`, page after page (`next` as `cursor`). */
  async all(path, cursor, { signal, start = null, limit = 1000, progress } = {}) {
    const items = [];
    let after = start;
    for (;;) {
      const sep = path.includes("?") ? "&" : "?";
      const query = `${sep}limit=${limit}${after === null ? "" : `&${cursor}=${encodeURIComponent(after)}`}`;
      const answer = await this.get(path + query, { signal });
      if (!answer.ok) return answer;
      items.push(...answer.body.items);
      progress?.(items.length);
      after = answer.body.next;
      if (after === null || after === undefined) return new Answer(200, { items });
    }
  }

  #unavailable(problem) {
    this.down = true;
    this.health(problem);
  }
}

/** A fresh Idempotency-Key: a retry of the same click is the same request. */
export function newIdempotencyKey(what) {
  return `console-${what}-${crypto.randomUUID()}`;
}

/** A path segment from a user id (already limited to A-Za-z0-9._-). */
export const segment = encodeURIComponent;
