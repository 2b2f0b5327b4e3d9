// Identity Analytics: a small client of the admin REST API. Plain DOM and ES modules, no framework,
// no build step. Every URL is relative, so the page works wherever the admin app is mounted.
// This module: sign in and out, navigation and routing; each page lives in a module of its own.
import { loadBudgets, startBudgets } from "./budgets.js";
import { loadList, startIdentities } from "./identities.js";
import { loadIdentity, startIdentity } from "./identity.js";
import { startLive, watch } from "./live.js";
import { loadOverview, startOverview } from "./overview.js";
import { $, Unauthorized, api, setToken, signedIn } from "./util.js";

const VIEWS = ["login-view", "overview-view", "list-view", "identity-view", "budgets-view"];

function show(view) {
  for (const id of VIEWS) $(id).hidden = id !== view;
  $("sign-out").hidden = $("nav").hidden = view === "login-view";
  for (const link of $("nav").querySelectorAll("a")) {
    const current = link.dataset.view === view || (view === "identity-view" && link.dataset.view === "list-view");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
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
  watch(null);
  $("login-error").textContent = typeof message === "string" ? message : "";
  show("login-view");
  $("token").focus();
}

// -- routing: #/ the overview, #/identities, #/identity/<_id>, #/budgets ---------------------------
const PAGES = [
  [/^#\/identity\/(.+)$/, "identity-view", (match) => loadIdentity(decodeURIComponent(match[1]))],
  [/^#\/identities$/, "list-view", () => loadList()],
  [/^#\/budgets$/, "budgets-view", () => loadBudgets()],
  [/^/, "overview-view", () => loadOverview()],
];

let routed = false;
function route() {
  if (!signedIn()) return signOut();
  for (const [pattern, view, load] of PAGES) {
    const match = location.hash.match(pattern);
    if (!match) continue;
    show(view);
    watch(() => load(match));
    load(match);
    if (routed) $(view).querySelector("h1")?.focus?.();
    routed = true;
    return;
  }
}

function start() {
  $("login-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  for (const heading of document.querySelectorAll("main h1")) heading.tabIndex = -1; // focus lands there on navigation
  startOverview();
  startIdentities();
  startIdentity();
  startBudgets();
  startLive();
  window.addEventListener("hashchange", route);
  window.addEventListener("unauthorized", () => {
    for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
    signOut("The admin API no longer accepts this token. Sign in again.");
  });
  route();
}

start();
