// What the app keeps between pages: the session (token), what the patient picked on the
// way to a booking, and what it showed of the holds it made (doctor, patient, time: the
// holds list of the API names slots, so the app keeps these words for its own holds).

const TOKEN = "token";
const DEV = "dev-token";
const REFRESH = "refresh-token";
const HOLDS = "holds";
const PICKED = "picked";

export const session = {
  token() {
    return localStorage.getItem(TOKEN) || "";
  },
  /** Keep the token; `dev` marks a token minted by `inventory dev` (shown as such). */
  signIn(token, { dev = false } = {}) {
    localStorage.setItem(TOKEN, token.trim());
    if (dev) localStorage.setItem(DEV, "1");
    else localStorage.removeItem(DEV);
  },
  signOut() {
    localStorage.removeItem(TOKEN);
    localStorage.removeItem(DEV);
    localStorage.removeItem(REFRESH);
  },
  /** Keep a login's tokens (a sign-in route's answer). */
  signInWith(tokens) {
    this.signIn(tokens.access_token);
    localStorage.setItem(REFRESH, tokens.refresh_token);
  },
  refreshToken() {
    return localStorage.getItem(REFRESH) || "";
  },
  isDev() {
    return localStorage.getItem(DEV) === "1";
  },
  /** The token's subject (the account), read from its payload; the server checks it. */
  account() {
    try {
      const part = this.token().split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part)).sub || "";
    } catch {
      return "";
    }
  },
};

/** What was picked on the way: hospital, department, doctor, schedule, slot. */
export const picked = {
  get() {
    try {
      return JSON.parse(sessionStorage.getItem(PICKED)) || {};
    } catch {
      return {};
    }
  },
  set(values) {
    sessionStorage.setItem(PICKED, JSON.stringify({ ...this.get(), ...values }));
  },
};

/** Holds made from this browser: {hold_id, summary} (newest first, at most 20). */
export const holds = {
  list() {
    try {
      return JSON.parse(localStorage.getItem(HOLDS)) || [];
    } catch {
      return [];
    }
  },
  remember(holdId, summary) {
    const rest = this.list().filter((h) => h.hold_id !== holdId);
    localStorage.setItem(HOLDS, JSON.stringify([{ hold_id: holdId, summary }, ...rest].slice(0, 20)));
  },
  summary(holdId) {
    return this.list().find((h) => h.hold_id === holdId)?.summary || null;
  },
  forget(holdId) {
    localStorage.setItem(HOLDS, JSON.stringify(this.list().filter((h) => h.hold_id !== holdId)));
  },
};
