// The app's shell: the header (back, title, language), the tab bar, and a hash router
// that draws one view at a time into <main>. Each view is a module under views/ with
// `render(ctx)` returning an element; `ctx.every` timers stop when the view is left.

import { Api } from "./api.js";
import { h, fill } from "../shared/dom.js";
import { language, setLanguage, t } from "./i18n.js";
import { session } from "./state.js";
import { heading, problem, waitNotice } from "./ui.js";
import * as hospitals from "./views/hospitals.js";
import * as departments from "./views/departments.js";
import * as doctors from "./views/doctors.js";
import * as doctor from "./views/doctor.js";
import * as slots from "./views/slots.js";
import * as patient from "./views/patient.js";
import * as confirm from "./views/confirm.js";
import * as paid from "./views/paid.js";
import * as bookings from "./views/bookings.js";
import * as booking from "./views/booking.js";
import * as holdsView from "./views/holds.js";
import * as patients from "./views/patients.js";
import * as login from "./views/login.js";
import * as room from "./views/room.js";
import * as waitlist from "./views/waitlist.js";
import * as waitlistJoin from "./views/waitlist_join.js";

export const api = new Api({
  token: () => session.token(),
  language,
  onWait: (seconds) => waitNotice(seconds),
  onUnauthorized: async () => {
    const refresh = session.refreshToken();
    if (!refresh) return false;
    try {
      session.signInWith(await api.refresh(refresh));
      return true;
    } catch {
      return false;
    }
  },
});

/** Hash routes: the pattern's groups are the view's `params`. */
const ROUTES = [
  [/^\/$/, hospitals, "nav_home"],
  [/^\/login$/, login, null],
  [/^\/hospital\/([^/]+)$/, departments, "nav_home"],
  [/^\/department\/([^/]+)$/, doctors, "nav_home"],
  [/^\/doctor\/([^/]+)\/([^/]+)$/, doctor, "nav_home"],
  [/^\/schedule\/([^/]+)$/, slots, "nav_home"],
  [/^\/slot\/([^/]+)$/, patient, "nav_home"],
  [/^\/room\/([^/]+)\/([^/]+)$/, room, "nav_home"],
  [/^\/hold\/([^/]+)$/, confirm, "nav_holds"],
  [/^\/paid\/([^/]+)$/, paid, "nav_bookings"],
  [/^\/bookings$/, bookings, "nav_bookings"],
  [/^\/booking\/([^/]+)$/, booking, "nav_bookings"],
  [/^\/holds$/, holdsView, "nav_holds"],
  [/^\/waitlist$/, waitlist, "nav_holds"],
  [/^\/waitlist\/join\/([^/]+)$/, waitlistJoin, "nav_home"],
  [/^\/patients$/, patients, "nav_patients"],
];
/** Views that need no sign-in (the catalogue is public). */
const PUBLIC = new Set([hospitals, departments, doctors, doctor, slots, login]);

let timers = [];

function go(path) {
  location.hash = "#" + path;
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?");
  return { path, query: new URLSearchParams(search) };
}

async function route() {
  for (const timer of timers) clearInterval(timer);
  timers = [];
  const { path, query } = parseHash();
  const main = document.getElementById("main");
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  if (!found) return go("/");
  const [pattern, view, tab] = found;
  if (!PUBLIC.has(view) && !session.token()) return go("/login?next=" + encodeURIComponent(path));
  const params = path.match(pattern).slice(1).map(decodeURIComponent);
  drawChrome(tab, path);
  const ctx = {
    api,
    params,
    query,
    go,
    /** Draw the current view again (after a change the hash does not show). */
    refresh: route,
    every(fn, ms) {
      timers.push(setInterval(fn, ms));
    },
  };
  const drawn = path;
  try {
    const element = await view.render(ctx);
    if (parseHash().path !== drawn) return; // the patient moved on meanwhile
    fill(main, element);
  } catch (error) {
    if (error && error.status === 401) {
      session.signOut();
      return go("/login?next=" + encodeURIComponent(path));
    }
    fill(main, h("section", {}, heading(t("app_name")), problem(error)));
  }
  const first = main.querySelector("h1");
  if (first) first.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

function drawChrome(tab, path) {
  document.getElementById("back").hidden = path === "/";
  document.getElementById("lang").textContent = t("lang_switch");
  document.getElementById("title").textContent = t("app_name");
  for (const link of document.querySelectorAll("#tabs a")) {
    link.textContent = t(link.dataset.label);
    if (link.dataset.label === tab) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const dialog = document.getElementById("ask");
  dialog.querySelector('[value="yes"]').textContent = t("yes");
  dialog.querySelector('[value="no"]').textContent = t("no");
  document.getElementById("back").setAttribute("aria-label", t("back"));
  const dev = document.getElementById("dev");
  dev.hidden = !session.token() || !session.isDev();
  dev.textContent = `${t("dev_badge")}: ${session.account()}`;
}

function start() {
  // dev's banner links to /app/#dev-token=<jwt>: signed in, and the token leaves the URL
  // (a fragment is never sent to a server).
  const match = location.hash.match(/^#dev-token=([A-Za-z0-9_.-]+)$/);
  if (match) {
    session.signIn(match[1], { dev: true });
    history.replaceState(null, "", location.pathname + "#/");
  }
  document.documentElement.lang = language();
  document.getElementById("back").addEventListener("click", () => history.back());
  document.getElementById("lang").addEventListener("click", () => {
    setLanguage(language() === "en" ? "zh-CN" : "en");
    route();
  });
  window.addEventListener("hashchange", route);
  route();
}

start();
