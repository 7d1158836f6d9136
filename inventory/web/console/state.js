// What the console keeps while its tab is open: the operator's token and the hospital
// being looked at. Both live in sessionStorage, not localStorage: a staff token is
// powerful, so it ends with the tab and is never shared with another tab or left on a
// shared desk computer after the browser closes.

const TOKEN = "console-token";
const DEV = "console-dev";
const HOSPITAL = "console-hospital";

/** The token's claims, read from its payload to draw the page; the server checks them. */
function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part)) || {};
  } catch {
    return {};
  }
}

export const session = {
  token() {
    return sessionStorage.getItem(TOKEN) || "";
  },
  /** Keep the token; `dev` marks one minted by `inventory dev` (shown as such). */
  signIn(token, { dev = false } = {}) {
    sessionStorage.setItem(TOKEN, token.trim());
    if (dev) sessionStorage.setItem(DEV, "1");
    else sessionStorage.removeItem(DEV);
  },
  signOut() {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(DEV);
    sessionStorage.removeItem(HOSPITAL);
  },
  isDev() {
    return sessionStorage.getItem(DEV) === "1";
  },
  claims() {
    return claimsOf(this.token());
  },
  /** The account the token speaks for (its `sub`). */
  account() {
    return this.claims().sub || "";
  },
  isOperator() {
    const roles = this.claims().roles;
    return Array.isArray(roles) && roles.includes("operator");
  },
  /** The hospitals a hospital operator acts for; null for a platform operator (all). */
  scope() {
    const named = this.claims().hospitals;
    return Array.isArray(named) ? named : null;
  },
  /** Seconds until the token expires (negative once past). */
  secondsLeft() {
    const exp = Number(this.claims().exp);
    return Number.isFinite(exp) ? exp - Date.now() / 1000 : -1;
  },
};

/** The hospital the console is looking at. */
export const hospital = {
  get() {
    return sessionStorage.getItem(HOSPITAL) || "";
  },
  set(id) {
    sessionStorage.setItem(HOSPITAL, id);
  },
};
