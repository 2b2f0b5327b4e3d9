// One identity's page: totals, budgets as progress rings with Reset, daily spend, models, profile;
// the profile edited and the identity deleted from here.
import { updated } from "./live.js";
import { $, ApiError, PERIOD_NAMES as PERIODS, SOURCES, api, confirmAction, count, failed, fromNanos, h, identityPath,
  forecastText, initials, keepFocus, nanos, percent, poll, record, usd, when } from "./util.js";

let shown = null; // the identity on screen (its record as last loaded)

// Edit and Delete act on the identity on screen: disabled until it has loaded (a click before
// then would do nothing, or act on the identity shown before).
function show(identity) {
  shown = identity;
  $("edit-identity").disabled = $("delete-identity").disabled = identity === null;
}

export async function loadIdentity(id) {
  $("identity-error").textContent = "";
  const fresh = shown?._id !== id && shown?.external_id !== id;
  if (fresh) {
    $("budget-message").textContent = "";
    show(null);
  }
  try {
    const [identity, budgets, daily] = await Promise.all([
      poll(`${identityPath(id)}?include_metrics=true`),
      poll(`${identityPath(id)}/budgets`),
      poll(`${identityPath(id)}/metrics/daily`).catch((error) => (error instanceof ApiError ? null : Promise.reject(error))),
    ]);
    show(record(identity.data));
    if (fresh || identity.changed) {
      renderIdentity(shown);
      renderModels(shown.metrics?.models);
    }
    if (fresh || budgets.changed) keepFocus($("budgets"), () => renderBudgets(id, budgets.data.data));
    if (fresh || daily?.changed) renderChart(daily?.data.data ?? null);
    updated();
  } catch (error) {
    failed(error, "identity-error");
  }
}

// -- editing and deleting -----------------------------------------------------------------------
function openEdit() {
  if (!shown) return;
  for (const node of document.querySelectorAll("#edit-form .error")) node.textContent = "";
  for (const node of document.querySelectorAll("#edit-form [aria-invalid]")) node.removeAttribute("aria-invalid");
  $("g-display-name").value = shown.display_name ?? "";
  $("g-email").value = shown.email ?? "";
  $("g-tags").value = (shown.tags ?? []).join(", ");
  $("edit-dialog").showModal();
  $("g-display-name").focus();
}

async function submitEdit(event) {
  event.preventDefault();
  const body = { display_name: $("g-display-name").value.trim(), email: $("g-email").value.trim(),
                 tags: $("g-tags").value.split(",").map((tag) => tag.trim()).filter(Boolean) };
  try {
    await api(identityPath(shown._id), { method: "PATCH", body });
    $("edit-dialog").close();
    $("budget-message").textContent = "Profile saved.";
    await loadIdentity(shown._id);
  } catch (error) {
    const field = { display_name: "display-name", email: "email", tags: "tags" }[error.body?.error?.field];
    if (!field) return failed(error, "h-form");
    $(`g-${field}`).setAttribute("aria-invalid", "true");
    $(`h-${field}`).textContent = error.message;
    $(`g-${field}`).focus();
  }
}

async function deleteIdentity() {
  if (!shown) return;
  const name = shown.external_id;
  const sure = await confirmAction(`Delete ${name}?`,
    "Its record, budgets, spend and metrics are removed for good. Its next request creates it again, empty.",
    "Delete identity");
  if (!sure) return $("delete-identity").focus();
  try {
    await api(identityPath(shown._id), { method: "DELETE" });
    show(null);
    location.hash = "#/identities";
  } catch (error) {
    failed(error, "identity-error");
  }
}

export function startIdentity() {
  $("edit-identity").addEventListener("click", openEdit);
  $("cancel-edit").addEventListener("click", () => $("edit-dialog").close());
  $("edit-form").addEventListener("submit", submitEdit);
  $("delete-identity").addEventListener("click", deleteIdentity);
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
    const button = event.currentTarget;
    const sure = await confirmAction(`Reset the ${period.toLowerCase()} budget?`,
      `This period's spend (${status.spent}) goes back to 0.00 and what requests in flight hold is released.`, "Reset");
    if (!sure) return button.focus();
    button.disabled = true;
    try {
      await api(`${identityPath(id)}/budgets/${status.period}/reset`, { method: "POST" });
      const budgets = await api(`${identityPath(id)}/budgets`);
      renderBudgets(id, budgets.data);
      $("budget-message").textContent = `${period} budget reset.`;
      $("budgets").querySelector(`[data-key="reset:${status.period}"]`)?.focus();
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
      status.forecast && status.percent < 100
        ? h("p", { class: status.forecast.exhausts_at ? "forecast at-risk" : "forecast muted",
                   text: forecastText(status.forecast) }) : null,
      nanos(status.reserved) > 0n ? h("p", { class: "muted", text: `${status.reserved} held by requests in flight` }) : null,
      h("button", { type: "button", onclick: reset, text: "Reset", "data-key": `reset:${status.period}`,
                    "aria-label": `Reset ${period.toLowerCase()} budget` })));
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
    h("td", { class: "num wide-only", text: count(m.input_tokens) }),
    h("td", { class: "num wide-only", text: count(m.output_tokens) }))));
}
