// 登录: the operator pastes their operator token (minted by `inventory token --operator
// [--hospital H]`, or the dev link of `inventory dev`). It is kept in sessionStorage for
// this tab only. The console checks the token names the operator role before keeping it;
// the service checks everything else on each call.

import { h, fill } from "../dom.js";
import { t } from "../i18n.js";
import { session } from "../state.js";
import { heading, problem } from "../ui.js";

export async function render({ query, go }) {
  const next = query.get("next");
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
    h("button", { type: "submit", class: "primary" }, t("sign_in")),
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
    go(next && next.startsWith("/") && next !== "/login" ? next : "/day");
  });
  return h("section", {}, heading(t("login_title")), form);
}
