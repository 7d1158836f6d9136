// 登录: a staff member signs in with their username and password (POST
// /v1/auth/staff/login, accounts from `inventory staff add`) and gets an operator token.
// The development / emergency path stays below it, folded and labelled as such: paste an
// operator token minted by `inventory token --operator [--hospital H]`. Either way the
// token is kept in sessionStorage for this tab only; the service checks it on each call.

import { h, fill } from "../../shared/dom.js";
import { t } from "../i18n.js";
import { session } from "../state.js";
import { heading, problem } from "../ui.js";

export async function render({ api, query, go }) {
  const next = query.get("next");
  const done = () => go(next && next.startsWith("/") && next !== "/login" ? next : "/day");
  return h("section", {}, heading(t("login_title")), passwordForm(api, done), tokenForm(done));
}

/** The staff sign-in: username and password. */
function passwordForm(api, done) {
  const username = h("input", {
    id: "staff-username",
    name: "username",
    required: true,
    autocomplete: "username",
    autocapitalize: "none",
    spellcheck: "false",
    maxlength: "64",
  });
  const password = h("input", {
    id: "staff-password",
    name: "password",
    type: "password",
    required: true,
    autocomplete: "current-password",
    maxlength: "256",
  });
  const errors = h("div", { class: "errors" });
  const submit = h("button", { type: "submit", class: "primary" }, t("sign_in"));
  const form = h(
    "form",
    { class: "panel narrow", id: "staff-login", "aria-describedby": "login-note" },
    h("p", { id: "login-note", class: "muted" }, t("login_note")),
    h("div", { class: "field" }, h("label", { for: "staff-username" }, t("username")), username),
    h("div", { class: "field" }, h("label", { for: "staff-password" }, t("password")), password),
    errors,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(errors);
    submit.disabled = true;
    try {
      const signed = await api.staffLogin(username.value.trim(), password.value);
      session.signIn(signed.access_token);
      done();
    } catch (error) {
      // The password field is emptied after a refusal; the username stays.
      password.value = "";
      fill(errors, problem(error));
      password.focus();
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

/** Development / emergency: paste an operator token. */
function tokenForm(done) {
  const input = h("textarea", {
    id: "operator-token",
    name: "token",
    rows: "5",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": "token-note",
  });
  const errors = h("div", { class: "errors" });
  const form = h(
    "form",
    { class: "panel narrow" },
    h("p", { id: "token-note", class: "muted" }, t("token_note")),
    h("div", { class: "field" }, h("label", { for: "operator-token" }, t("operator_token")), input),
    errors,
    h("button", { type: "submit", class: "secondary" }, t("token_sign_in")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    fill(errors);
    const token = input.value.trim();
    if (!token) return input.focus();
    const previous = session.token();
    session.signIn(token);
    if (!session.isOperator() || session.secondsLeft() <= 0) {
      const code = session.isOperator() ? "token_expired" : "not_operator";
      if (previous) session.signIn(previous);
      else session.signOut();
      fill(errors, problem({ title: t(code), code }));
      return input.focus();
    }
    done();
  });
  return h("details", { class: "token-path", id: "token-path" }, h("summary", {}, t("token_path")), form);
}
