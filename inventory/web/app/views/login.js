// 登录. Until the service has its own sign-in routes (WeChat and SMS code), the only way in
// is a token minted by `inventory dev` (its banner prints one, and an app link that signs
// in with it): clearly a development aid, never a production sign-in.

import { h } from "../dom.js";
import { t } from "../i18n.js";
import { session } from "../state.js";
import { heading } from "../ui.js";

export async function render({ query, go }) {
  const input = h("textarea", { id: "dev-token", name: "token", rows: "4", required: true, autocomplete: "off", spellcheck: "false" });
  const form = h(
    "form",
    { class: "login" },
    h("p", { class: "dev-note", role: "note" }, t("dev_login_note")),
    h("div", { class: "field" }, h("label", { for: "dev-token" }, t("dev_token")), input),
    h("button", { type: "submit", class: "primary block" }, t("sign_in")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!input.value.trim()) return input.focus();
    session.signIn(input.value, { dev: true });
    const next = query.get("next");
    go(next && next.startsWith("/") ? next : "/");
  });
  const out = session.token()
    ? h("button", { type: "button", class: "secondary block", onclick: () => { session.signOut(); go("/login"); } }, t("sign_out"))
    : null;
  return h("section", {}, heading(t("login_title")), form, out);
}
