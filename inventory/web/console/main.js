// The console's shell: the header (hospital, language, sign-out), the tabs, and a hash
// router that draws one view at a time into <main>. Each view is a module under views/
// with `render(ctx)` returning an element; `ctx.every` timers stop when the view is left.

import { Api } from "./api.js";
import { h, fill } from "../shared/dom.js";
import { language, setLanguage, t } from "./i18n.js";
import { hospital, session } from "./state.js";
import { heading, loading, problem } from "./ui.js";
import * as login from "./views/login.js";
import * as day from "./views/day.js";
import * as schedule from "./views/schedule.js";
import * as bookings from "./views/bookings.js";
import * as booking from "./views/booking.js";
import * as bans from "./views/bans.js";
import * as report from "./views/report.js";

export const api = new Api({
  token: () => session.token(),
  language,
  // An expired token (a long shift, a live screen polling): back to the sign-in page,
  // which returns to the same screen afterwards.
  onUnauthorized: () => {
    const { path } = parseHash();
    session.signOut();
    hospitals = [];
    if (path !== "/login") go("/login?next=" + encodeURIComponent(path));
  },
});

/** Hash routes: the pattern's groups are the view's `params`. */
const ROUTES = [
  [/^\/login$/, login, null],
  [/^\/day$/, day, "nav_day"],
  [/^\/schedule\/([^/]+)$/, schedule, "nav_day"],
  [/^\/bookings$/, bookings, "nav_bookings"],
  [/^\/booking\/([^/]+)$/, booking, "nav_bookings"],
  [/^\/bans$/, bans, "nav_bans"],
  [/^\/report$/, report, "nav_report"],
];

let timers = [];
/** The hospitals this operator may look at: [{hospital_id, name}]. */
let hospitals = [];

function go(path) {
  location.hash = "#" + path;
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/day";
  const [path, search = ""] = raw.split("?");
  return { path, query: new URLSearchParams(search) };
}

/** The hospitals to choose from: every one for a platform operator, the token's own for
 * a hospital operator (the server refuses the others anyway: 404). */
async function loadHospitals() {
  const { items } = await api.hospitals();
  const scope = session.scope();
  hospitals = scope ? items.filter((item) => scope.includes(item.hospital_id)) : items;
  if (!hospitals.some((item) => item.hospital_id === hospital.get()) && hospitals.length) {
    hospital.set(hospitals[0].hospital_id);
  }
}

async function route() {
  for (const timer of timers) clearInterval(timer);
  timers = [];
  const { path, query } = parseHash();
  const main = document.getElementById("main");
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  if (!found) return go("/day");
  const [pattern, view, tab] = found;
  const signedIn = Boolean(session.token()) && session.secondsLeft() > 0;
  if (view !== login && !signedIn) return go("/login?next=" + encodeURIComponent(path));
  if (signedIn && !hospitals.length) {
    try {
      await loadHospitals();
    } catch (error) {
      fill(main, h("section", {}, heading(t("app_name")), problem(error)));
      return;
    }
  }
  const params = path.match(pattern).slice(1).map(decodeURIComponent);
  drawChrome(tab);
  const ctx = {
    api,
    params,
    query,
    go,
    hospitalId: hospital.get(),
    /** The hospital's time zone: "today" is the hospital's today. */
    timeZone: hospitals.find((item) => item.hospital_id === hospital.get())?.timezone || "Asia/Shanghai",
    hospitals,
    /** Draw the current view again. */
    refresh: route,
    every(fn, ms) {
      // Polling pauses while the tab is hidden (no one is looking).
      timers.push(setInterval(() => document.visibilityState === "visible" && fn(), ms));
    },
  };
  const drawn = location.hash;
  // A new page says it is loading; the same one drawn again keeps its content meanwhile.
  if (main.dataset.hash !== drawn) fill(main, loading());
  try {
    const element = await view.render(ctx);
    if (location.hash !== drawn) return; // the operator moved on meanwhile
    fill(main, element);
  } catch (error) {
    if (location.hash !== drawn) return;
    if (error && error.status === 401) {
      session.signOut();
      return go("/login?next=" + encodeURIComponent(path));
    }
    fill(main, h("section", {}, heading(t("app_name")), problem(error)));
  }
  // Which address <main> shows now (what the browser tests wait for).
  main.dataset.hash = drawn;
  const first = main.querySelector("h1");
  if (first) first.focus({ preventScroll: true });
}

function drawChrome(tab) {
  const signedIn = Boolean(session.token());
  document.documentElement.lang = language();
  document.title = t("app_name");
  document.getElementById("title").textContent = t("app_name");
  document.getElementById("lang").textContent = t("lang_switch");
  const out = document.getElementById("sign-out");
  out.textContent = t("sign_out");
  out.hidden = !signedIn;
  const tabs = document.getElementById("tabs");
  tabs.hidden = !signedIn;
  tabs.setAttribute("aria-label", t("nav_label"));
  for (const link of tabs.querySelectorAll("a")) {
    link.textContent = t(link.dataset.label);
    if (link.dataset.label === tab) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const label = document.getElementById("hospital-label");
  label.hidden = !signedIn || hospitals.length === 0;
  document.getElementById("hospital-text").textContent = t("hospital");
  const select = document.getElementById("hospital");
  fill(select, hospitals.map((item) => h("option", { value: item.hospital_id, selected: item.hospital_id === hospital.get() }, item.name)));
  const who = document.getElementById("who");
  who.textContent = signedIn ? `${session.account()} · ${session.scope() ? t("role_hospital") : t("role_platform")}` : "";
  const dev = document.getElementById("dev");
  dev.hidden = !signedIn || !session.isDev();
  dev.textContent = t("dev_badge");
  const dialog = document.getElementById("ask");
  dialog.querySelector('[value="no"]').textContent = t("no");
}

function start() {
  // dev's banner links to /console/#dev-token=<jwt>: signed in, and the token leaves the
  // address bar at once (a fragment is never sent to a server).
  const match = location.hash.match(/^#dev-token=([A-Za-z0-9_.-]+)$/);
  if (match) {
    session.signIn(match[1], { dev: true });
    history.replaceState(null, "", location.pathname + "#/day");
  }
  document.getElementById("lang").addEventListener("click", () => {
    setLanguage(language() === "en" ? "zh-CN" : "en");
    route();
  });
  document.getElementById("sign-out").addEventListener("click", () => {
    session.signOut();
    hospitals = [];
    go("/login");
  });
  document.getElementById("hospital").addEventListener("change", (event) => {
    hospital.set(event.target.value);
    route();
  });
  window.addEventListener("hashchange", route);
  route();
}

start();
