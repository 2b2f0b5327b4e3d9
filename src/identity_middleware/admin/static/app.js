// Identity Analytics: a small client of the admin REST API. Plain DOM, no framework, no build step.
// Every URL is relative, so the page works wherever the admin app is mounted. Text goes in with
// textContent only (identity fields are user input). Money stays the API's exact decimal strings;
// sums are done in integer nano-USD (BigInt), and floats are used only for bar heights and ring arcs.

const TOKEN_KEY = "identity-middleware:admin-token";
const PAGE_SIZE = 25;
const SVG = "http://www.w3.org/2000/svg";
const PERIODS = { daily: "Daily", weekly: "Weekly", monthly: "Monthly", yearly: "Yearly" };
const SOURCES = { body: "Body", header: "Header", auth: "Auth" };
const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY);
const list = { after: null, before: null, rows: [], sort: null, descending: false };

// -- the REST API -------------------------------------------------------------------------------
class Unauthorized extends Error {}
class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store", credentials: "omit",
  });
  if (response.status === 401) throw new Unauthorized();
  const data = response.status === 204 ? {} : await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const record = (data) => data.identity ?? data; // {"identity": Record} or the bare record

// -- small helpers ------------------------------------------------------------------------------
function h(tag, attributes = {}, ...children) {
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

function nanos(amount) { // "0.08" -> 80000000n, exactly
  const [whole, fraction = ""] = String(amount ?? "0").replace("-", "").split(".");
  const value = BigInt(whole || "0") * 1000000000n + BigInt((fraction + "000000000").slice(0, 9));
  return String(amount).startsWith("-") ? -value : value;
}

function fromNanos(value) { // 80000000n -> "0.08" (at least two decimals, as the API writes money)
  const whole = value / 1000000000n;
  let fraction = (value % 1000000000n).toString().padStart(9, "0").replace(/0+$/, "");
  return `${whole}.${fraction.padEnd(2, "0")}`;
}

const usd = (amount) => `$${amount}`;
const count = (value) => Number(value ?? 0).toLocaleString("en-US");
const percent = (value) => `${Number.isInteger(value) ? value : Number(value).toFixed(1)}%`;
const when = (iso) => new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
const initials = (identity) => (identity.display_name || identity.external_id).trim().slice(0, 2).toUpperCase();
const identityPath = (id) => `v2/identities/${encodeURIComponent(id)}`;

function show(view) {
  for (const id of ["login-view", "list-view", "identity-view"]) $(id).hidden = id !== view;
  $("sign-out").hidden = view === "login-view";
}

function failed(error, where) {
  if (error instanceof Unauthorized) return signOut("The admin API no longer accepts this token. Sign in again.");
  $(where).textContent = error instanceof ApiError ? error.message : `Could not reach the admin API (${error.message}).`;
}

// -- sign in and out ----------------------------------------------------------------------------
async function signIn(event) {
  event.preventDefault();
  const input = $("token");
  $("login-error").textContent = "";
  input.removeAttribute("aria-invalid");
  token = input.value.trim();
  try {
    await api("v2/identities?limit=1");
  } catch (error) {
    token = null;
    input.setAttribute("aria-invalid", "true");
    $("login-error").textContent = error instanceof Unauthorized
      ? "Wrong token: the admin API refused it." : `Could not reach the admin API (${error.message}).`;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  input.value = "";
  route();
}

function signOut(message = "") {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("login-error").textContent = typeof message === "string" ? message : "";
  show("login-view");
  $("token").focus();
}

// -- the identities table -----------------------------------------------------------------------
const SORT_KEYS = {
  identity: (i) => (i.display_name || i.external_id).toLowerCase(),
  source: (i) => i.last_source ?? "",
  requests: (i) => i.metrics?.total_requests ?? 0,
  cost: (i) => nanos(i.metrics?.total_cost),
  tokens: (i) => i.metrics?.total_tokens ?? 0,
  errors: (i) => i.metrics?.error_rate ?? 0,
};

async function loadList(direction = null) {
  const query = new URLSearchParams({ limit: PAGE_SIZE, include_metrics: "true" });
  const search = $("search").value.trim();
  const tags = $("tag-filter").value.trim();
  if (search) query.set("search", search);
  if (tags) query.set("tags", tags);
  if (list.after) query.set("starting_after", list.after);
  if (list.before) query.set("ending_before", list.before);
  $("list-error").textContent = "";
  try {
    const page = await api(`v2/identities?${query}`);
    list.rows = page.data;
    const backward = direction === "backward";
    $("prev-page").disabled = backward ? !page.has_more : !list.after;
    $("next-page").disabled = backward ? false : !page.has_more;
    renderRows();
  } catch (error) {
    failed(error, "list-error");
  }
}

function page(direction) {
  const rows = list.rows;
  if (!rows.length) return;
  list.after = direction === "forward" ? rows[rows.length - 1]._id : null;
  list.before = direction === "backward" ? rows[0]._id : null;
  loadList(direction);
}

function renderRows() {
  const rows = [...list.rows];
  if (list.sort) {
    const key = SORT_KEYS[list.sort];
    rows.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0) * (list.descending ? -1 : 1));
  }
  for (const th of document.querySelectorAll("#identities th[data-sort]")) {
    const sorted = th.dataset.sort === list.sort;
    if (sorted) th.setAttribute("aria-sort", list.descending ? "descending" : "ascending");
    else th.removeAttribute("aria-sort");
  }
  $("identities").tBodies[0].replaceChildren(...rows.map(row));
  $("list-empty").hidden = rows.length > 0;
}

function row(identity) {
  const metrics = identity.metrics ?? {};
  const source = SOURCES[identity.last_source];
  return h("tr", {},
    h("td", {}, h("div", { class: "who" },
      h("span", { class: "avatar", "aria-hidden": "true", text: initials(identity) }),
      h("div", {},
        identity.display_name ? h("div", { class: "name", text: identity.display_name }) : null,
        h("a", { href: `#/identity/${encodeURIComponent(identity._id)}`, text: identity.external_id })))),
    h("td", {}, source ? h("span", { class: `badge ${identity.last_source}`, text: source })
      : h("span", { class: "muted", text: "—", title: "Not reported yet" })),
    h("td", { class: "num", text: count(metrics.total_requests) }),
    h("td", { class: "num", text: usd(metrics.total_cost ?? "0.00") }),
    h("td", { class: "num", text: count(metrics.total_tokens) }),
    h("td", { class: "num", text: percent(Math.round((metrics.error_rate ?? 0) * 1000) / 10) }));
}

function sortBy(key) {
  list.descending = list.sort === key ? !list.descending : key !== "identity" && key !== "source";
  list.sort = key;
  renderRows();
}

// -- creating an identity -----------------------------------------------------------------------
const FIELDS = { external_id: "external-id", id: "external-id", display_name: "display-name", email: "email",
                 period: "period", amount: "amount" };

function fieldError(name, message) {
  const input = $(`f-${name}`);
  input.setAttribute("aria-invalid", "true");
  $(`e-${name}`).textContent = message;
  return input;
}

function clearCreateErrors() {
  for (const node of document.querySelectorAll("#create-form [aria-invalid]")) node.removeAttribute("aria-invalid");
  for (const node of document.querySelectorAll("#create-form .error")) node.textContent = "";
}

function openCreate() {
  $("create-form").reset();
  $("budget-fields").disabled = true;
  clearCreateErrors();
  $("create-dialog").showModal();
  $("f-external-id").focus();
}

async function submitCreate(event) {
  event.preventDefault();
  clearCreateErrors();
  const body = { external_id: $("f-external-id").value.trim() };
  const displayName = $("f-display-name").value.trim();
  const email = $("f-email").value.trim();
  if (displayName) body.display_name = displayName;
  if (email) body.email = email;
  const invalid = [];
  if (!body.external_id) invalid.push(fieldError("external-id", "External ID is required."));
  if ($("f-budget").checked) {
    const amount = $("f-amount").value.trim();
    if (!/^\d+(\.\d+)?$/.test(amount) || nanos(amount) <= 0n) {
      invalid.push(fieldError("amount", "Enter an amount in USD greater than 0, such as 10.00."));
    }
    body.budgets = [{ period: $("f-period").value, amount }];
  }
  if (invalid.length) return invalid[0].focus();
  try {
    const created = record(await api("v2/identities", { method: "POST", body }));
    $("create-dialog").close();
    location.hash = `#/identity/${encodeURIComponent(created._id)}`;
  } catch (error) {
    if (error instanceof Unauthorized) return failed(error, "e-form");
    const detail = error.body?.error ?? {};
    const name = detail.type === "identity_exists" ? "external_id" : String(detail.field ?? "").replace(/^budgets(\[\d+\])?\.?/, "");
    const field = FIELDS[name] ?? (String(detail.field ?? "").startsWith("budgets") ? "amount" : null);
    if (field) fieldError(field, error.message).focus();
    else $("e-form").textContent = error.message;
  }
}

// -- one identity -------------------------------------------------------------------------------
async function loadIdentity(id) {
  $("identity-error").textContent = "";
  $("budget-message").textContent = "";
  try {
    const [identity, budgets, daily] = await Promise.all([
      api(`${identityPath(id)}?include_metrics=true`).then(record),
      api(`${identityPath(id)}/budgets`),
      api(`${identityPath(id)}/metrics/daily`).catch((error) => (error instanceof ApiError ? null : Promise.reject(error))),
    ]);
    renderIdentity(identity);
    renderBudgets(id, budgets.data);
    renderChart(daily?.data ?? null);
    renderModels(identity.metrics?.models);
  } catch (error) {
    failed(error, "identity-error");
  }
}

function renderIdentity(identity) {
  const metrics = identity.metrics ?? {};
  $("identity-title").textContent = identity.display_name || identity.external_id;
  $("identity-subtitle").textContent = identity.display_name ? identity.external_id : "";
  $("identity-avatar").textContent = initials(identity);
  const card = (label, value) => h("div", { class: "card" }, h("div", { class: "label", text: label }),
    h("div", { class: "value", text: value }));
  $("totals").replaceChildren(
    card("Requests", count(metrics.total_requests)), card("Cost", usd(metrics.total_cost ?? "0.00")),
    card("Tokens", count(metrics.total_tokens)), card("Error rate", percent(Math.round((metrics.error_rate ?? 0) * 1000) / 10)));
  const entry = (term, value) => [h("dt", { text: term }), h("dd", { text: value || "—" })];
  $("profile").replaceChildren(
    ...entry("External ID", identity.external_id), ...entry("ID", identity._id),
    ...entry("Display name", identity.display_name), ...entry("Email", identity.email),
    ...entry("Tags", (identity.tags ?? []).join(", ")), ...entry("Last source", SOURCES[identity.last_source]),
    ...entry("Metadata", Object.keys(identity.metadata ?? {}).length ? JSON.stringify(identity.metadata) : ""),
    ...entry("Created", when(identity.created)), ...entry("Updated", when(identity.updated)));
}

function ring(status) {
  const radius = 52;
  const circumference = 2 * Math.PI * radius;
  const fraction = Math.min(Math.max(status.percent, 0), 100) / 100;
  const level = status.percent >= 100 ? "over" : status.percent >= 75 ? "warn" : "ok";
  return h("svg:svg", { viewBox: "0 0 120 120", class: `ring-svg ${level}`, "aria-hidden": "true" },
    h("svg:circle", { cx: 60, cy: 60, r: radius, class: "track" }),
    fraction > 0 ? h("svg:circle", { cx: 60, cy: 60, r: radius, class: "arc", transform: "rotate(-90 60 60)",
                                     "stroke-dasharray": `${circumference * fraction} ${circumference}` }) : null,
    h("svg:text", { x: 60, y: 66, "text-anchor": "middle", class: "ring-label", text: percent(status.percent) }));
}

function budgetCard(id, status) {
  const period = PERIODS[status.period] ?? status.period;
  const consumed = `${status.spent} of ${status.amount} consumed, ${percent(status.percent)}`;
  const reset = async (event) => {
    event.currentTarget.disabled = true;
    try {
      await api(`${identityPath(id)}/budgets/${status.period}/reset`, { method: "POST" });
      const budgets = await api(`${identityPath(id)}/budgets`);
      renderBudgets(id, budgets.data);
      $("budget-message").textContent = `${period} budget reset.`;
    } catch (error) {
      failed(error, "identity-error");
    }
  };
  return h("article", { class: "budget" },
    h("div", { class: "ring", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
               "aria-valuenow": Math.min(status.percent, 100), "aria-label": `${period} budget`,
               "aria-valuetext": consumed }, ring(status)),
    h("div", { class: "budget-text" },
      h("h3", { text: `${period} budget` }),
      h("p", { class: "consumed", text: consumed }),
      h("p", { class: "muted", text: `USD · resets at ${when(status.resets_at)}` }),
      nanos(status.reserved) > 0n ? h("p", { class: "muted", text: `${status.reserved} held by requests in flight` }) : null,
      h("button", { type: "button", onclick: reset, text: "Reset" })));
}

function renderBudgets(id, statuses) {
  $("budgets").replaceChildren(...(statuses.length ? statuses.map((status) => budgetCard(id, status))
    : [h("p", { class: "muted", text: "No budget: spend is tracked, nothing is blocked." })]));
}

function renderChart(days) {
  if (!days) return $("chart").replaceChildren(h("p", { class: "muted", text: "This store keeps no daily metrics." }));
  const total = fromNanos(days.reduce((sum, day) => sum + nanos(day.cost), 0n));
  const peak = days.reduce((best, day) => (nanos(day.cost) > nanos(best.cost) ? day : best), days[0]);
  const top = Number(peak.cost);
  const width = 720, height = 200, left = 8, bottom = 24, gap = 4;
  const step = (width - left) / days.length;
  const bars = days.map((day, index) => {
    const barHeight = top > 0 ? Math.max((Number(day.cost) / top) * (height - bottom - 16), nanos(day.cost) > 0n ? 2 : 0) : 0;
    return h("svg:rect", { x: left + index * step + gap / 2, y: height - bottom - barHeight, width: step - gap,
                           height: barHeight, rx: 2, class: "bar" },
      h("svg:title", { text: `${day.day}: ${usd(day.cost)}, ${count(day.requests)} requests` }));
  });
  const label = (x, anchor, text) => h("svg:text", { x, y: height - 6, "text-anchor": anchor, class: "axis", text });
  const svg = h("svg:svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
                             "aria-label": `Daily spend over the last ${days.length} days, ${usd(total)} in all` },
    h("svg:line", { x1: left, x2: width, y1: height - bottom, y2: height - bottom, class: "baseline" }),
    ...bars, label(left, "start", days[0].day), label(width, "end", days[days.length - 1].day),
    top > 0 ? h("svg:text", { x: width, y: 10, "text-anchor": "end", class: "axis", text: `top day ${usd(peak.cost)}` }) : null);
  const table = h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Day" }),
    h("th", { scope: "col", class: "num", text: "Cost" }), h("th", { scope: "col", class: "num", text: "Requests" }))),
  h("tbody", {}, ...days.filter((day) => day.requests > 0).map((day) => h("tr", {}, h("td", { text: day.day }),
    h("td", { class: "num", text: usd(day.cost) }), h("td", { class: "num", text: count(day.requests) })))));
  $("chart").replaceChildren(h("p", { class: "muted", text: `${usd(total)} in ${days.length} days` }), svg,
    h("details", {}, h("summary", { text: "Days with usage, as a table" }), table));
}

function renderModels(models) {
  $("models").hidden = !Array.isArray(models) || models.length === 0;
  if ($("models").hidden) return;
  $("model-table").tBodies[0].replaceChildren(...models.map((m) => h("tr", {}, h("td", { text: m.model }),
    h("td", { class: "num", text: count(m.requests) }), h("td", { class: "num", text: usd(m.cost) }),
    h("td", { class: "num", text: count(m.input_tokens) }), h("td", { class: "num", text: count(m.output_tokens) }))));
}

// -- routing: #/ is the list, #/identity/<_id> an identity --------------------------------------
function route() {
  if (!token) return signOut();
  const match = location.hash.match(/^#\/identity\/(.+)$/);
  if (match) {
    show("identity-view");
    loadIdentity(decodeURIComponent(match[1]));
  } else {
    show("list-view");
    loadList();
  }
}

function start() {
  $("login-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    list.after = list.before = null;
    loadList();
  });
  $("prev-page").addEventListener("click", () => page("backward"));
  $("next-page").addEventListener("click", () => page("forward"));
  for (const th of document.querySelectorAll("#identities th[data-sort]")) {
    th.querySelector("button").addEventListener("click", () => sortBy(th.dataset.sort));
  }
  $("open-create").addEventListener("click", openCreate);
  $("cancel-create").addEventListener("click", () => $("create-dialog").close());
  $("create-form").addEventListener("submit", submitCreate);
  $("f-budget").addEventListener("change", (event) => { $("budget-fields").disabled = !event.target.checked; });
  window.addEventListener("hashchange", route);
  route();
}

start();
