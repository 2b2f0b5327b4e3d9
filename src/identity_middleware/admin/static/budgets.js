// The Budgets page: every budget the Budgets API serves (identity, model, provider, workspace, project,
// API key, team and other match expressions), with its use this period; created, edited, deactivated,
// reset and deleted here (reset and delete ask first); an identity's one-time budget (a prepaid balance)
// is topped up here. A team budget is the match budget `metadata.team == "<team>"`.
import { updated } from "./live.js";
import { $, ApiError, PERIOD_NAMES, Unauthorized, api, confirmAction, count, failed, forecastText, h, keepFocus, levelOf, nanos,
  percent, poll, usd } from "./util.js";

const PAGES = 10; // at most 2,000 budgets on the page
const SCOPE_NAMES = { identity: "Identity", model: "Model", provider: "Provider", workspace: "Workspace",
                      project: "Project", api_key: "API key", team: "Team", match: "Match" };
const TARGET_HINTS = { identity: "The identity's external ID.", model: "The model ID, as requests name it (gpt-4o).",
                       provider: "The provider (openai, anthropic, ...).", workspace: "Every request: no target.",
                       project: "The project, as the app declares it (project_from).",
                       api_key: "The API key's ID, as the app declares it (api_key_from).",
                       team: "The team: identities whose metadata.team is this.",
                       match: 'A CEL expression, e.g. metadata.team == "ml" && provider == "openai".' };
const TARGET_FIELDS = { identity: "identity_external_id", model: "model_id", provider: "provider",
                        project: "project_id", api_key: "api_key_id" };
const TEAM = /^metadata\.team == ("(?:[^"\\]|\\.)*")$/; // the expression a team budget is made of
let budgets = [];
let editing = null; // the budget the dialog edits, or null when it creates one

const teamOf = (budget) => {
  const found = TEAM.exec(budget.match?.cel ?? "");
  return found ? JSON.parse(found[1]) : null;
};
const scopeOf = (budget) => {
  if (!budget.scope) return teamOf(budget) !== null ? "team" : "match";
  const scope = Object.keys(budget.scope)[0];
  return scope === "apiKey" ? "api_key" : scope;
};
const periodOf = (budget) => budget.limits.period.replace("BUDGET_PERIOD_", "").toLowerCase();
export const targetOf = (budget) => {
  const scope = scopeOf(budget);
  if (scope === "team") return teamOf(budget);
  if (scope === "match") return budget.match.cel;
  return scope === "workspace" ? "Workspace" : Object.values(Object.values(budget.scope)[0])[0];
};
const scopeBody = (scope, target) => {
  if (scope === "team") return { match: { cel: `metadata.team == ${JSON.stringify(target)}` } };
  if (scope === "match") return { match: { cel: target } };
  return { scope: { [scope]: scope === "workspace" ? {} : { [TARGET_FIELDS[scope]]: target } } };
};

export async function loadBudgets() {
  $("budgets-error").textContent = "";
  try {
    let changed = false;
    const found = [];
    let after = null;
    for (let n = 0; n < PAGES; n += 1) {
      const page = await poll(`v2/budgets?limit=200${after ? `&starting_after=${encodeURIComponent(after)}` : ""}`);
      changed ||= page.changed;
      found.push(...page.data.data);
      if (!page.data.has_more || !page.data.data.length) break;
      after = page.data.data[page.data.data.length - 1].budgetId;
    }
    if (changed || found.length !== budgets.length || !$("budget-table").tBodies[0].rows.length) {
      budgets = found;
      keepFocus($("budgets-view"), render);
    }
    updated();
  } catch (error) {
    failed(error, "budgets-error");
  }
}

function used(budget) {
  const usage = budget.usage ?? { amount: 0, tokens: 0 };
  const parts = [];
  if (budget.limits.amount !== undefined) {
    const share = Number((nanos(usage.amount) * 10000n) / nanos(budget.limits.amount)) / 100;
    parts.push([share, `${usd(usage.amount)} of ${usd(budget.limits.amount)}`]);
  }
  if (budget.limits.tokenLimit !== undefined) {
    parts.push([(usage.tokens / budget.limits.tokenLimit) * 100, `${count(usage.tokens)} of ${count(budget.limits.tokenLimit)} tokens`]);
  }
  const share = Math.max(0, ...parts.map(([value]) => value));
  return { share, text: parts.map(([, text]) => text).join(", ") || "No limit" };
}

function render() {
  $("budget-table").tBodies[0].replaceChildren(...budgets.map(row));
  $("budgets-empty").hidden = budgets.length > 0;
}

function row(budget) {
  const target = targetOf(budget);
  const scope = SCOPE_NAMES[scopeOf(budget)] ?? scopeOf(budget);
  const period = PERIOD_NAMES[periodOf(budget)] ?? periodOf(budget);
  const { share, text } = used(budget);
  const level = levelOf(share);
  const expired = budget.expiresAt && new Date(budget.expiresAt) <= new Date();
  const state = !budget.isActive ? "Inactive" : expired ? "Expired" : "Active";
  const what = `${period.toLowerCase()} ${scope.toLowerCase()} budget for ${target}`;
  const button = (label, action, extra = {}) => h("button", { type: "button", onclick: () => action(budget),
    text: label, "aria-label": `${label} ${what}`, "data-key": `${label}:${budget.budgetId}`, ...extra });
  return h("tr", { "data-budget": budget.budgetId },
    h("th", { scope: "row" }, h("span", { class: "name", text: target }),
      h("span", { class: "narrow-only muted", text: ` · ${scope}` })),
    h("td", { class: "wide-only", text: scope }),
    h("td", { text: period }),
    h("td", { class: "num" }, h("span", { text }),
      h("span", { class: `state ${level.replace(" ", "-")}`, text: ` ${percent(Math.round(share * 10) / 10)}` }),
      budget.forecast?.exhausts_at && share < 100
        ? h("div", { class: "forecast small at-risk", text: forecastText(budget.forecast) }) : null),
    h("td", { class: "wide-only" }, h("span", { class: `badge ${state.toLowerCase()}`, text: state })),
    h("td", { class: "row-actions" },
      button("Edit", openEdit),
      button(budget.isActive ? "Deactivate" : "Activate", toggle),
      button("Reset", reset),
      takesTopUps(budget) ? button("Top up", openTopUp) : null,
      button("Delete", remove, { class: "danger" })));
}

// -- actions ------------------------------------------------------------------------------------
const budgetPath = (budget) => `v2/budgets/${encodeURIComponent(budget.budgetId)}`;

async function act(call, message) {
  $("budgets-error").textContent = "";
  try {
    await call();
    $("budgets-message").textContent = message;
    await loadBudgets();
  } catch (error) {
    failed(error, "budgets-error");
  }
}

function toggle(budget) {
  const active = !budget.isActive;
  return act(() => api(budgetPath(budget), { method: "PATCH", body: { is_active: active } }),
    `The budget for ${targetOf(budget)} is ${active ? "active" : "inactive"}.`);
}

async function reset(budget) {
  const sure = await confirmAction(`Reset the budget for ${targetOf(budget)}?`,
    "This period's consumption goes back to zero; requests it refused pass again.", "Reset");
  if (!sure) return document.querySelector(`[data-key="Reset:${CSS.escape(budget.budgetId)}"]`)?.focus();
  return act(() => api(`${budgetPath(budget)}/reset-consumption`, { method: "POST", body: {} }),
    `The budget for ${targetOf(budget)} was reset.`);
}

async function remove(budget) {
  const sure = await confirmAction(`Delete the budget for ${targetOf(budget)}?`,
    "It stops limiting requests at once, and its consumption is forgotten.", "Delete");
  if (!sure) return document.querySelector(`[data-key="Delete:${CSS.escape(budget.budgetId)}"]`)?.focus();
  return act(() => api(budgetPath(budget), { method: "DELETE" }), `The budget for ${targetOf(budget)} was deleted.`);
}

// -- credits: an identity's one-time budget with an amount is a prepaid balance ----------------------
const takesTopUps = (budget) => scopeOf(budget) === "identity" && periodOf(budget) === "one_time"
  && budget.limits.amount !== undefined;
let toppingUp = null; // the budget the Top up dialog adds to, and the idempotency key of this dialog

function openTopUp(budget) {
  // One key per opened dialog: submitting again after a failed or lost reply cannot add twice.
  // crypto.getRandomValues, not randomUUID: the dashboard may be served over plain http, off localhost.
  const random = Array.from(crypto.getRandomValues(new Uint8Array(16)), (byte) => byte.toString(16).padStart(2, "0"));
  toppingUp = { budget, key: `dashboard-${random.join("")}` };
  $("topup-form").reset();
  for (const node of document.querySelectorAll("#topup-form .error")) node.textContent = "";
  $("t-amount").removeAttribute("aria-invalid");
  $("topup-title").textContent = `Top up the balance of ${targetOf(budget)}`;
  $("topup-text").textContent = `Its limit is ${usd(budget.limits.amount)}; the amount is added to it.`;
  $("topup-dialog").showModal();
  $("t-amount").focus();
}

async function submitTopUp(event) {
  event.preventDefault();
  const amount = $("t-amount").value.trim();
  if (!/^\d+(\.\d+)?$/.test(amount) || nanos(amount) <= 0n) {
    $("t-amount").setAttribute("aria-invalid", "true");
    $("e-topup-amount").textContent = "Enter an amount in USD greater than 0, such as 10.00.";
    return $("t-amount").focus();
  }
  const { budget, key } = toppingUp;
  const body = { amount: "@AMOUNT@", idempotency_key: key };
  const raw = JSON.stringify(body).replace('"@AMOUNT@"', amount); // the exact number typed, never a float
  try {
    const reply = await api(`${budgetPath(budget)}/top-up`, { method: "POST", body, raw });
    $("topup-dialog").close();
    $("budgets-message").textContent =
      `The balance of ${targetOf(budget)} was topped up by ${usd(amount)}: its limit is now ${usd(reply.top_up.new_limit)}.`;
    await loadBudgets();
  } catch (error) {
    if (error instanceof Unauthorized || !(error instanceof ApiError)) return failed(error, "e-topup-form");
    $("e-topup-form").textContent = error.message;
  }
}

// -- the form: New budget and Edit --------------------------------------------------------------
function clearErrors() {
  for (const node of document.querySelectorAll("#budget-form .error")) node.textContent = "";
  for (const node of document.querySelectorAll("#budget-form [aria-invalid]")) node.removeAttribute("aria-invalid");
}

function scopeChanged() {
  const scope = $("b-scope").value;
  $("b-target-hint").textContent = TARGET_HINTS[scope] ?? "";
  // A budget's scope never changes; a match budget's expression may (PATCH match).
  $("b-target").disabled = scope === "workspace" || (editing !== null && scope !== "match");
  $("b-target").maxLength = scope === "match" ? 4096 : 255;
}

function openNew() {
  editing = null;
  $("budget-form").reset();
  clearErrors();
  $("budget-dialog-title").textContent = "New budget";
  $("submit-budget").textContent = "Create";
  $("b-scope").disabled = $("b-period").disabled = false;
  scopeChanged();
  $("budget-dialog").showModal();
  $("b-scope").focus();
}

function openEdit(budget) {
  editing = budget;
  clearErrors();
  $("budget-dialog-title").textContent = `Edit the budget for ${targetOf(budget)}`;
  $("submit-budget").textContent = "Save";
  $("b-scope").value = scopeOf(budget);
  $("b-target").value = scopeOf(budget) === "workspace" ? "" : targetOf(budget);
  $("b-period").value = budget.limits.period.replace("BUDGET_PERIOD_", "");
  $("b-amount").value = budget.limits.amount !== undefined ? usd(budget.limits.amount).slice(1) : "";
  $("b-active").checked = budget.isActive;
  $("b-scope").disabled = $("b-period").disabled = true; // a budget's scope and period never change
  scopeChanged();
  $("budget-dialog").showModal();
  $("b-amount").focus();
}

function invalid(input, errorId, message) {
  input.setAttribute("aria-invalid", "true");
  $(errorId).textContent = message;
  input.focus();
}

async function submit(event) {
  event.preventDefault();
  clearErrors();
  const scope = $("b-scope").value;
  const target = $("b-target").value.trim();
  const amount = $("b-amount").value.trim();
  if (!/^\d+(\.\d+)?$/.test(amount) || nanos(amount) <= 0n) {
    return invalid($("b-amount"), "e-budget-amount", "Enter an amount in USD greater than 0, such as 10.00.");
  }
  if ((!editing || scope === "match") && scope !== "workspace" && !target) {
    return invalid($("b-target"), "e-target", "Target is required.");
  }
  // The amount goes as the exact JSON number typed (never through a float).
  const limits = { period: `BUDGET_PERIOD_${$("b-period").value}`, amount: "@AMOUNT@" };
  const newExpression = editing && scope === "match" && target !== editing.match.cel ? { match: { cel: target } } : {};
  const body = editing ? { limits: { amount: "@AMOUNT@" }, is_active: $("b-active").checked, ...newExpression }
    : { ...scopeBody(scope, target), limits, is_active: $("b-active").checked };
  const raw = JSON.stringify(body).replace('"@AMOUNT@"', amount);
  try {
    await api(editing ? budgetPath(editing) : "v2/budgets", { method: editing ? "PATCH" : "POST", body, raw });
    $("budget-dialog").close();
    $("budgets-message").textContent = editing ? `The budget for ${targetOf(editing)} was saved.`
      : `A ${$("b-period").selectedOptions[0].text.toLowerCase()} budget for ${scope === "workspace" ? "the workspace" : target} was created.`;
    await loadBudgets();
  } catch (error) {
    if (error instanceof Unauthorized || !(error instanceof ApiError)) return failed(error, "e-budget-form");
    const field = String(error.body?.error?.field ?? "");
    if (field.startsWith("limits.amount")) return invalid($("b-amount"), "e-budget-amount", error.message);
    if (field.startsWith("scope.") || field.startsWith("match")) return invalid($("b-target"), "e-target", error.message);
    $("e-budget-form").textContent = error.message;
  }
}

export function startBudgets() {
  $("open-budget").addEventListener("click", openNew);
  $("cancel-budget").addEventListener("click", () => $("budget-dialog").close());
  $("b-scope").addEventListener("change", scopeChanged);
  $("budget-form").addEventListener("submit", submit);
  $("cancel-topup").addEventListener("click", () => $("topup-dialog").close());
  $("topup-form").addEventListener("submit", submitTopUp);
}
