// One identity's page: totals, budgets as progress rings with Reset, daily spend, models, profile.
import { $, ApiError, SOURCES, api, count, failed, fromNanos, h, identityPath, initials, nanos, percent, record, usd,
  when } from "./util.js";

const PERIODS = { daily: "Daily", weekly: "Weekly", monthly: "Monthly", yearly: "Yearly" };

export async function loadIdentity(id) {
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
