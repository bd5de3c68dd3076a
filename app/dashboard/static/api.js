// What every page shares: the key (this tab only), /v1 calls carrying it, images and event
// streams fetched with it. The key is only ever sent as an Authorization header: never in a
// URL, a cookie or a form submission.

const KEY = "ganforge.key";
const RETURN_TO = "ganforge.return";
export const FINISHED = new Set(["succeeded", "failed", "canceled"]);

export const getKey = () => sessionStorage.getItem(KEY);
export const setKey = (key) => sessionStorage.setItem(KEY, key);
export const forgetKey = () => sessionStorage.removeItem(KEY);

/** An error answer from /v1, with its problem+json body. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Forget the key and show the key form; come back to this page once a key is given. */
export function toKeyForm() {
  forgetKey();
  if (location.pathname.startsWith("/ui/")) sessionStorage.setItem(RETURN_TO, location.pathname);
  location.replace("/");
}

/** The page to return to after the key form, once. */
export function takeReturnPath() {
  const path = sessionStorage.getItem(RETURN_TO);
  sessionStorage.removeItem(RETURN_TO);
  return path && path.startsWith("/ui/") ? path : null;
}

export function authHeaders(key = getKey()) {
  return { Authorization: `Bearer ${key}` };
}

async function problemOf(res) {
  try {
    const body = await res.json();
    if (body && typeof body === "object") return body;
  } catch {
    // not JSON (a proxy's error page): fall through
  }
  return { status: res.status, title: res.statusText, detail: `HTTP ${res.status} ${res.statusText}` };
}

/** fetch() a /v1 path with the key; throws ApiError for an error answer (401: to the key form). */
export async function request(path, { method = "GET", json, body, headers = {}, signal, cache } = {}) {
  if (!getKey()) {
    toKeyForm();
    throw new ApiError(401, { detail: "no API key in this tab" });
  }
  const all = { ...authHeaders(), ...headers };
  if (json !== undefined) {
    all["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const res = await fetch(path, { method, headers: all, body, signal, cache, credentials: "omit" });
  if (res.status === 401) {
    toKeyForm();
    throw new ApiError(401, await problemOf(res));
  }
  if (!res.ok) throw new ApiError(res.status, await problemOf(res));
  return res;
}

/** A /v1 JSON call: the parsed body (null for 204). */
export async function api(path, options = {}) {
  const res = await request(path, { cache: "no-store", ...options });
  return res.status === 204 ? null : res.json();
}

const shown = new WeakMap(); // img -> { url: its object URL, seq: the newest request for it }

/**
 * Fetch an image with the key and show it in `img` as a blob: URL (the old one revoked).
 * Resolves with the response headers, or null when a newer call for the same img won.
 */
export async function showImage(img, path) {
  const state = shown.get(img) || { url: null, seq: 0 };
  const seq = ++state.seq;
  shown.set(img, state);
  let res, blob;
  try {
    res = await request(path);
    blob = await res.blob();
  } catch (err) {
    if (seq !== state.seq) return null; // a newer request owns the img now
    throw err;
  }
  if (seq !== state.seq) return null;
  const url = URL.createObjectURL(blob);
  img.src = url;
  await img.decode().catch(() => {}); // a broken image shows as such; the headers still count
  if (seq !== state.seq) {
    URL.revokeObjectURL(url); // replaced while decoding
    return null;
  }
  if (state.url) URL.revokeObjectURL(state.url);
  state.url = url;
  img.hidden = false;
  return res.headers;
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });

/** Parse a text/event-stream body into {id, event, data} objects (comments are skipped). */
export async function* parseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return; // an unfinished event at the end is dropped, as EventSource does
      buffer += value;
      for (;;) {
        const nl = buffer.search(/[\r\n]/);
        // a lone \r at the end may be half of \r\n: wait for the next chunk
        if (nl < 0 || (buffer[nl] === "\r" && nl === buffer.length - 1)) break;
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") {
          if (event.data.length || event.id !== undefined) {
            yield { id: event.id, event: event.event || "message", data: event.data.join("\n") };
          }
          event = { data: [] };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "data") event.data.push(val);
          else if (field === "event") event.event = val;
          else if (field === "id" && !val.includes("\0")) event.id = val;
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * Follow a /v1 event stream with the key (EventSource cannot send headers). A stream that
 * ends or drops before `done()` is true is reopened with Last-Event-ID, so the server sends
 * every checkpoint since and then the job's current state (superseded states are skipped).
 * Stops when `signal` aborts; throws on a 4xx other than 429.
 */
export async function followEvents(path, onEvent, { signal, done }) {
  let lastId = null;
  let delay = 250;
  while (!signal.aborted) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const res = await request(path, { headers, signal, cache: "no-store" });
      for await (const ev of parseEvents(res.body)) {
        if (ev.id !== undefined) lastId = ev.id;
        delay = 250; // it is flowing again
        onEvent(ev);
      }
      if (done()) return;
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status < 500 && err.status !== 429) throw err;
      delay = Math.min(delay * 2, 10000); // the server is away: back off
    }
    await sleep(delay, signal);
  }
}

/** Call fn at most once per `ms`; calls in between are merged into one at the end. */
export function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(() => {
      timer = null;
      last = Date.now();
      fn();
    }, wait);
  };
}

/** Show or hide an error element. */
export function showError(el, message) {
  el.textContent = message || "";
  el.hidden = !message;
}

export function fmtEta(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

export function fmtNum(value, digits = 3) {
  return value == null || !Number.isFinite(value) ? "–" : Number(value.toPrecision(digits)).toString();
}

export function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

/** The "forget key" control in the header, on every page. */
export function setUpHeader() {
  const button = document.getElementById("forget-key");
  button.hidden = !getKey();
  if (button.dataset.bound) return;
  button.dataset.bound = "1";
  button.addEventListener("click", () => {
    forgetKey();
    location.assign("/");
  });
}
