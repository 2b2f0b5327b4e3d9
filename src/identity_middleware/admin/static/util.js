// The dashboard's shared parts: the REST API client (and the token it sends), DOM building, money.
// Money stays the API's exact decimal strings; sums are done in integer nano-USD (BigInt), and
// floats are used only for geometry (bar heights, ring arcs). orq's shapes (an identity's `metrics`)
// carry money as JSON numbers: read back to the nano-USD they were written from (exact below $9M). Text goes in with textContent only:
// identity fields are user input.

const TOKEN_KEY = "identity-middleware:admin-token";
const SVG = "http://www.w3.org/2000/svg";
export const SOURCES = { body: "Body", header: "Header", auth: "Auth" };
export const $ = (id) => document.getElementById(id);

// The token lives in this tab's sessionStorage (and this variable): never in a URL or a cookie.
let token = sessionStorage.getItem(TOKEN_KEY);
export const signedIn = () => token !== null;

export function setToken(value) {
  token = value;
  if (value === null) sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, value);
}

// -- the REST API -------------------------------------------------------------------------------
export class Unauthorized extends Error {}
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

// The last body and ETag of each GET: a poll sends If-None-Match and a 304 reuses the body (`changed`
// tells the caller whether anything did, so an unchanged view is not rebuilt under the user's focus).
const held = new Map();

async function call(path, { method = "GET", body, raw } = {}) {
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const before = method === "GET" ? held.get(path) : undefined;
  if (before) headers["If-None-Match"] = before.etag;
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : raw ?? JSON.stringify(body),
    cache: "no-store", credentials: "omit",
  });
  if (response.status === 401) throw new Unauthorized();
  return { response, before };
}

export async function poll(path) { // -> { data, changed }
  const { response, before } = await call(path);
  if (response.status === 304 && before) return { data: before.data, changed: false };
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data);
  const etag = response.headers.get("ETag");
  if (etag) held.set(path, { etag, data });
  return { data, changed: true };
}

export async function api(path, options = {}) {
  if ((options.method ?? "GET") === "GET") return (await poll(path)).data;
  const { response } = await call(path, options);
  const data = response.status === 204 ? {} : await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// A CSV export: fetched with the token (never a URL carrying it), saved through a download link.
export async function download(path, filename) {
  const { response } = await call(path);
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => ({})));
  const link = h("a", { href: URL.createObjectURL(await response.blob()), download: filename, hidden: true });
  document.body.append(link);
  link.click();
  setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
}

// A destructive action asks first, in a modal dialog that names it; resolves true when confirmed.
export function confirmAction(title, text, action) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = action;
  return new Promise((resolve) => {
    const done = (answer) => {
      $("confirm-form").onsubmit = $("confirm-cancel").onclick = dialog.oncancel = null;
      dialog.close();
      resolve(answer);
    };
    $("confirm-form").onsubmit = (event) => { event.preventDefault(); done(true); };
    $("confirm-cancel").onclick = () => done(false);
    dialog.oncancel = (event) => { event.preventDefault(); done(false); };
    dialog.showModal();
    $("confirm-cancel").focus(); // the safe choice has the focus
  });
}

// Rebuild `container` with `render()`, putting the focus back on the control it was on (same data-key).
export function keepFocus(container, render) {
  const key = container.contains(document.activeElement) ? document.activeElement.dataset.key : undefined;
  render();
  if (key) container.querySelector(`[data-key="${CSS.escape(key)}"]`)?.focus();
}

export const record = (data) => data.identity; // the identity routes answer {"identity": Record}

// -- small helpers ------------------------------------------------------------------------------
export function h(tag, attributes = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function nanos(amount) { // "0.08" (or the number 0.08) -> 80000000n, exactly
  if (typeof amount === "number") amount = amount.toFixed(9); // never "1e-7": nine places, as stored
  const [whole, fraction = ""] = String(amount ?? "0").replace("-", "").split(".");
  const value = BigInt(whole || "0") * 1000000000n + BigInt((fraction + "000000000").slice(0, 9));
  return String(amount).startsWith("-") ? -value : value;
}

export function fromNanos(value) { // 80000000n -> "0.08" (at least two decimals, as the API writes money)
  const whole = value / 1000000000n;
  let fraction = (value % 1000000000n).toString().padStart(9, "0").replace(/0+$/, "");
  return `${whole}.${fraction.padEnd(2, "0")}`;
}

export const usd = (amount) => `$${typeof amount === "number" ? fromNanos(nanos(amount)) : amount}`;
export const count = (value) => Number(value ?? 0).toLocaleString("en-US");
export const percent = (value) => `${Number.isInteger(value) ? value : Number(value).toFixed(1)}%`;
export const when = (iso) => new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
export const time = (iso) => new Date(iso).toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
export const PERIOD_NAMES = { daily: "Daily", weekly: "Weekly", monthly: "Monthly", yearly: "Yearly", one_time: "One time" };
// A recent rate in words: cents, or two significant digits below a cent (an estimate, not money owed).
const rate = (amount) => {
  const value = Number(amount);
  return `$${value >= 0.01 || value === 0 ? value.toFixed(2) : value.toPrecision(2)} a day`;
};
// A budget's forecast (our extension field) in words: when it runs out at its recent rate, if before
// it resets; nothing once it is spent (``spent``: its consumed share is 100 % or more).
export const forecastText = (forecast, spent = false) => (!forecast || spent ? ""
  : forecast.exhausts_at ? `Forecast to run out ${when(forecast.exhausts_at)} at ${rate(forecast.burn_rate)}`
  : `${rate(forecast.burn_rate)} lately: lasts until it resets`);
export const levelOf = (percent) => (percent >= 100 ? "over" : percent >= 75 ? "at risk" : "ok");
export const initials = (identity) => (identity.display_name || identity.external_id).trim().slice(0, 2).toUpperCase();
export const identityPath = (id) => `v2/identities/${encodeURIComponent(id)}`;

// A failed call: an expired token signs out (app.js listens), anything else is told in `where`.
export function failed(error, where) {
  if (error instanceof Unauthorized) return window.dispatchEvent(new CustomEvent("unauthorized"));
  $(where).textContent = error instanceof ApiError ? error.message : `Could not reach the admin API (${error.message}).`;
}
