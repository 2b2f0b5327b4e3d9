// Live updates: the view on screen refreshes itself every few seconds with conditional GETs (a 304
// changes nothing on screen), says when it last did, and can be paused. `?refresh=N` sets N seconds.
import { $ } from "./util.js";

const asked = Number(new URLSearchParams(location.search).get("refresh"));
const INTERVAL = Number.isFinite(asked) && asked >= 0.5 ? asked * 1000 : 5000;
let refresh = null;
let paused = false;
let busy = false;

// `fn` refreshes the view now shown (null: nothing to refresh, e.g. signed out).
export function watch(fn) {
  refresh = fn;
  $("live").hidden = fn === null;
}

export function updated() {
  const now = new Date();
  $("updated").textContent = paused ? `Paused · updated ${now.toLocaleTimeString()}` : `Updated ${now.toLocaleTimeString()}`;
  $("updated").dataset.at = String(now.getTime());
}

async function tick() {
  if (paused || busy || refresh === null || document.hidden || document.querySelector("dialog[open]")) return;
  busy = true;
  try {
    await refresh();
  } finally {
    busy = false;
  }
}

export function startLive() {
  $("pause").addEventListener("click", () => {
    paused = !paused;
    $("pause").setAttribute("aria-pressed", String(paused));
    const text = $("updated").textContent.replace(/^Paused · u/, "U");
    $("updated").textContent = paused ? `Paused · ${text.charAt(0).toLowerCase()}${text.slice(1)}` : text;
    if (!paused) tick();
  });
  window.setInterval(tick, INTERVAL);
}
