// Identity Analytics: a small client of the admin REST API. Plain DOM and ES modules, no framework,
// no build step. Every URL is relative, so the page works wherever the admin app is mounted.
// This module: sign in and out, the identities table, the create form, and routing.
import { loadIdentity } from "./identity.js";
import { $, SOURCES, Unauthorized, api, count, failed, h, initials, nanos, percent, record, setToken,
  signedIn, usd } from "./util.js";

const PAGE_SIZE = 25;
const list = { after: null, before: null, rows: [], sort: null, descending: false };

function show(view) {
  for (const id of ["login-view", "list-view", "identity-view"]) $(id).hidden = id !== view;
  $("sign-out").hidden = view === "login-view";
}

// -- sign in and out ----------------------------------------------------------------------------
async function signIn(event) {
  event.preventDefault();
  const input = $("token");
  $("login-error").textContent = "";
  input.removeAttribute("aria-invalid");
  setToken(input.value.trim());
  try {
    await api("v2/identities?limit=1");
  } catch (error) {
    setToken(null);
    input.setAttribute("aria-invalid", "true");
    $("login-error").textContent = error instanceof Unauthorized
      ? "Wrong token: the admin API refused it." : `Could not reach the admin API (${error.message}).`;
    return;
  }
  input.value = "";
  route();
}

function signOut(message = "") {
  setToken(null);
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

// -- routing: #/ is the list, #/identity/<_id> an identity --------------------------------------
function route() {
  if (!signedIn()) return signOut();
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
  window.addEventListener("unauthorized", () => {
    $("create-dialog").close();
    signOut("The admin API no longer accepts this token. Sign in again.");
  });
  route();
}

start();
