// The identities page: the table (30-day numbers and each identity's tightest budget), its total,
// search, tags, pages, CSV export, and the form that creates an identity.
import { updated } from "./live.js";
import { $, PERIOD_NAMES, SOURCES, Unauthorized, api, count, download, failed, h, initials, keepFocus, levelOf,
  nanos, percent, poll, record, usd } from "./util.js";

const PAGE_SIZE = 25;
const list = { after: null, before: null, direction: null, rows: [], sort: null, descending: false };

const tightest = (identity) => (identity.budgets ?? []).reduce(
  (best, status) => (best === null || status.percent > best.percent ? status : best), null);

const SORT_KEYS = {
  identity: (i) => (i.display_name || i.external_id).toLowerCase(),
  source: (i) => i.last_source ?? "",
  requests: (i) => i.metrics?.total_requests ?? 0,
  cost: (i) => nanos(i.metrics?.total_cost),
  tokens: (i) => i.metrics?.total_tokens ?? 0,
  errors: (i) => i.metrics?.error_rate ?? 0,
  budget: (i) => tightest(i)?.percent ?? -1,
};

function filters() {
  const query = new URLSearchParams();
  const search = $("search").value.trim();
  const tags = $("tag-filter").value.trim();
  if (search) query.set("search", search);
  if (tags) query.set("tags", tags);
  return query;
}

export async function loadList(direction = list.direction) {
  list.direction = direction;
  const query = new URLSearchParams({ limit: PAGE_SIZE, include_metrics: "true", include_budgets: "true" });
  for (const [name, value] of filters()) query.set(name, value);
  if (list.after) query.set("starting_after", list.after);
  if (list.before) query.set("ending_before", list.before);
  $("list-error").textContent = "";
  try {
    const [page, total] = await Promise.all([poll(`v2/identities?${query}`),
      poll(`v2/analytics/identities/count?${filters()}`)]);
    if (page.changed || total.changed || !$("identities").tBodies[0].rows.length) {
      list.rows = page.data.data;
      const backward = direction === "backward";
      $("prev-page").disabled = backward ? !page.data.has_more : !list.after;
      $("next-page").disabled = backward ? false : !page.data.has_more;
      keepFocus($("list-view"), renderRows);
      const n = total.data.total;
      $("list-total").textContent = `${count(n)} ${n === 1 ? "identity" : "identities"}${filters().size ? " match" : " in all"}`;
    }
    updated();
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

export function budgetBadge(status) {
  if (!status) return h("span", { class: "muted", text: "None" });
  const level = levelOf(status.percent);
  return h("span", { class: `state ${level.replace(" ", "-")}` },
    `${PERIOD_NAMES[status.period] ?? status.period} ${percent(Math.round(status.percent * 10) / 10)}`,
    h("span", { class: "state-word", text: ` · ${level}` }));
}

function row(identity) {
  const metrics = identity.metrics ?? {};
  const source = SOURCES[identity.last_source];
  return h("tr", {},
    h("td", {}, h("div", { class: "who" },
      h("span", { class: "avatar", "aria-hidden": "true", text: initials(identity) }),
      h("div", {},
        identity.display_name ? h("div", { class: "name", text: identity.display_name }) : null,
        h("a", { href: `#/identity/${encodeURIComponent(identity._id)}`, text: identity.external_id,
                 "data-key": `identity:${identity._id}` })))),
    h("td", { class: "wide-only" }, source ? h("span", { class: `badge ${identity.last_source}`, text: source })
      : h("span", { class: "muted", text: "—", title: "Not reported yet" })),
    h("td", { class: "num wide-only", text: count(metrics.total_requests) }),
    h("td", { class: "num", text: usd(metrics.total_cost ?? "0.00") }),
    h("td", { class: "num wide-only", text: count(metrics.total_tokens) }),
    h("td", { class: "num wide-only", text: percent(Math.round((metrics.error_rate ?? 0) * 1000) / 10) }),
    h("td", {}, budgetBadge(tightest(identity))));
}

function sortBy(key) {
  list.descending = list.sort === key ? !list.descending : !["identity", "source"].includes(key);
  list.sort = key;
  renderRows();
}

async function exportIdentities() {
  $("list-error").textContent = "";
  try {
    await download(`v2/analytics/identities/export?${filters()}`, "identities.csv");
  } catch (error) {
    failed(error, "list-error");
  }
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

export function startIdentities() {
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    list.after = list.before = list.direction = null;
    loadList();
  });
  $("prev-page").addEventListener("click", () => page("backward"));
  $("next-page").addEventListener("click", () => page("forward"));
  for (const th of document.querySelectorAll("#identities th[data-sort]")) {
    th.querySelector("button").addEventListener("click", () => sortBy(th.dataset.sort));
  }
  $("export-identities").addEventListener("click", exportIdentities);
  $("open-create").addEventListener("click", openCreate);
  $("cancel-create").addEventListener("click", () => $("create-dialog").close());
  $("create-form").addEventListener("submit", submitCreate);
  $("f-budget").addEventListener("change", (event) => { $("budget-fields").disabled = !event.target.checked; });
}
