// The Overview: the workspace over a range (spend, requests, tokens, error rate, spend per bucket),
// its models, the top spenders (ranked by the server over every identity), the budgets at risk and
// the recent refusals, all from one call: GET v2/analytics/overview?range=.
import { updated } from "./live.js";
import { $, PERIOD_NAMES, count, download, failed, h, nanos, percent, poll, time, usd, when } from "./util.js";

export async function loadOverview() {
  $("overview-error").textContent = "";
  try {
    const { data, changed } = await poll(`v2/analytics/overview?range=${$("range").value}`);
    if (changed || !$("overview-totals").childElementCount) render(data);
    updated();
  } catch (error) {
    failed(error, "overview-error");
  }
}

const identityLink = (id, externalId) => h("a", { href: `#/identity/${encodeURIComponent(id)}`, text: externalId });

// "over", "at risk", or "forecast to run out <when>" (the store's forecast: before the budget resets).
function riskText(budget) {
  if (budget.state === "forecast") return `${percent(budget.percent)} · forecast to run out ${when(budget.exhausts_at)}`;
  return `${percent(budget.percent)} · ${budget.state === "over" ? "over" : "at risk"}`;
}

function render(data) {
  const totals = data.totals;
  const card = (label, value) => h("div", { class: "card" }, h("div", { class: "label", text: label }),
    h("div", { class: "value", text: value }));
  $("overview-totals").replaceChildren(card("Spend", usd(totals.cost)), card("Requests", count(totals.requests)),
    card("Tokens", count(totals.tokens)), card("Error rate", percent(Math.round(totals.error_rate * 1000) / 10)));
  renderSeries(data);
  $("top-table").tBodies[0].replaceChildren(...data.top_spenders.map((row) => h("tr", {},
    h("td", {}, identityLink(row._id, row.external_id), row.display_name ? h("div", { class: "muted small", text: row.display_name }) : null),
    h("td", { class: "num", text: usd(row.cost) }), h("td", { class: "num", text: count(row.requests) }))));
  $("top-empty").hidden = data.top_spenders.length > 0;
  $("risk-list").replaceChildren(...data.budgets_at_risk.map((budget) => h("li", {},
    h("div", {}, h("a", { class: "name", text: budget.target,
                          href: budget.scope === "identity" ? `#/identity/${encodeURIComponent(budget.target)}` : "#/budgets" }),
      h("span", { class: "muted", text: ` · ${budget.scope} · ${PERIOD_NAMES[budget.period] ?? budget.period}` })),
    h("span", { class: `state ${budget.state === "over" ? "over" : "at-risk"}`, text: riskText(budget) }))));
  $("risk-empty").hidden = data.budgets_at_risk.length > 0;
  const models = data.models;
  $("overview-models").tBodies[0].replaceChildren(...models.map((m) => h("tr", {}, h("td", { text: m.model }),
    h("td", { class: "num", text: count(m.requests) }), h("td", { class: "num", text: usd(m.cost) }),
    h("td", { class: "num wide-only", text: count(m.input_tokens + m.output_tokens) }))));
  $("overview-models-note").textContent = models.length
    ? (data.models_hours ? `The last ${data.models_hours} hours.`
      : `Whole UTC days: the last ${data.models_days === 1 ? "day" : `${data.models_days} days`}.`)
    : "No model was reported in this range.";
  $("refusals-table").tBodies[0].replaceChildren(...data.refusals.map((refusal) => h("tr", {},
    h("td", {}, identityLink(refusal.identity_id, refusal.external_id)),
    h("td", { text: `${PERIOD_NAMES[refusal.period] ?? refusal.period} ${refusal.scope ?? "identity"} budget, `
                    + `$${refusal.spent} of $${refusal.amount}${nanos(refusal.estimate) > 0n ? ` (+$${refusal.estimate} asked)` : ""}` }),
    h("td", {}, h("time", { datetime: refusal.at, text: time(refusal.at) })))));
  $("refusals-empty").hidden = data.refusals.length > 0;
}

function renderSeries(data) {
  const points = data.series;
  const hourly = data.granularity === "hour";
  const label = (start) => (hourly ? new Date(start).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" }) : start);
  const peak = points.reduce((best, p) => (nanos(p.cost) > nanos(best.cost) ? p : best), points[0] ?? { cost: "0" });
  const top = Number(peak.cost);
  const width = 720, height = 180, bottom = 22, gap = 3;
  const step = width / Math.max(points.length, 1);
  const bars = points.map((p, index) => {
    const barHeight = top > 0 ? Math.max((Number(p.cost) / top) * (height - bottom - 14), nanos(p.cost) > 0n ? 2 : 0) : 0;
    return h("svg:rect", { x: index * step + gap / 2, y: height - bottom - barHeight, width: Math.max(step - gap, 1),
                           height: barHeight, rx: 2, class: "bar" },
      h("svg:title", { text: `${label(p.start)}: ${usd(p.cost)}, ${count(p.requests)} requests, ${count(p.errors)} errors` }));
  });
  const axis = (x, anchor, text) => h("svg:text", { x, y: height - 5, "text-anchor": anchor, class: "axis", text });
  const unit = hourly ? "hour" : "day";
  const svg = h("svg:svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
                             "aria-label": `Spend per ${unit} over the last ${$("range").selectedOptions[0].text}, ${usd(data.totals.cost)} in all` },
    h("svg:line", { x1: 0, x2: width, y1: height - bottom, y2: height - bottom, class: "baseline" }), ...bars,
    points.length ? axis(0, "start", label(points[0].start)) : null,
    points.length ? axis(width, "end", label(points[points.length - 1].start)) : null);
  const table = h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col", text: hourly ? "Hour" : "Day" }),
    h("th", { scope: "col", class: "num", text: "Cost" }), h("th", { scope: "col", class: "num", text: "Requests" }),
    h("th", { scope: "col", class: "num", text: "Errors" }))),
  h("tbody", {}, ...points.filter((p) => p.requests > 0).map((p) => h("tr", {}, h("td", { text: label(p.start) }),
    h("td", { class: "num", text: usd(p.cost) }), h("td", { class: "num", text: count(p.requests) }),
    h("td", { class: "num", text: count(p.errors) })))));
  $("series").replaceChildren(svg, h("details", {}, h("summary", { text: `Each ${unit} with usage, as a table` }),
    h("div", { class: "scroll" }, table)));
}

async function exportRefusals() {
  $("overview-error").textContent = "";
  try {
    await download("v2/analytics/refusals/export", "refusals.csv");
  } catch (error) {
    failed(error, "overview-error");
  }
}

export function startOverview() {
  $("range").addEventListener("change", () => loadOverview());
  $("export-refusals").addEventListener("click", exportRefusals);
}
