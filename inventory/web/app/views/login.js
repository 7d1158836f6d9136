// 登录: by SMS code when the service has its sign-in routes (read from its OpenAPI
// document), and, for development only, with a token `inventory dev` minted (its banner
// prints an app link that signs in with it). The dev sign-in is labelled as such.

import { h, fill } from "../../shared/dom.js";
import { t } from "../i18n.js";
import { session } from "../state.js";
import { heading, problem } from "../ui.js";

function smsForm(api, done) {
  const phone = h("input", { id: "login-phone", type: "tel", inputmode: "tel", autocomplete: "tel", maxlength: "20", required: true });
  const code = h("input", { id: "login-code", type: "text", inputmode: "numeric", autocomplete: "one-time-code", maxlength: "6", pattern: "[0-9]{6}", required: true });
  const send = h("button", { type: "button", class: "secondary" }, t("send_code"));
  const note = h("p", { class: "muted small", role: "status" });
  const errors = h("div", { class: "errors" });
  let timer = null;
  send.addEventListener("click", async () => {
    fill(errors);
    if (!/^(?:\+?86)?1[3-9]\d{9}$/.test(phone.value.replace(/[\s-]/g, ""))) {
      fill(errors, problem({ title: t("check_phone"), code: "phone_format" }));
      return phone.focus();
    }
    send.disabled = true;
    try {
      const sent = await api.sendSmsCode(phone.value.trim());
      fill(note, t("code_sent", { min: Math.round(sent.expires_in / 60) }));
      let left = sent.resend_after;
      clearInterval(timer);
      timer = setInterval(() => {
        left -= 1;
        send.textContent = left > 0 ? t("resend_in", { s: left }) : t("send_code");
        if (left <= 0) {
          clearInterval(timer);
          send.disabled = false;
        }
      }, 1000);
      code.focus();
    } catch (error) {
      fill(errors, problem(error));
      send.disabled = false;
    }
  });
  const form = h(
    "form",
    { class: "login", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "login-phone" }, t("phone")), phone),
    h("div", { class: "field" }, h("label", { for: "login-code" }, t("sms_code")), h("div", { class: "row" }, code, send)),
    note,
    errors,
    h("button", { type: "submit", class: "primary block" }, t("sign_in")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(errors);
    try {
      session.signInWith(await api.smsLogin(phone.value.trim(), code.value.trim()));
      clearInterval(timer);
      done();
    } catch (error) {
      fill(errors, problem(error));
    }
  });
  return form;
}

function devForm(done) {
  const input = h("textarea", { id: "dev-token", name: "token", rows: "4", required: true, autocomplete: "off", spellcheck: "false" });
  const form = h(
    "form",
    { class: "login" },
    h("p", { class: "dev-note", role: "note" }, t("dev_login_note")),
    h("div", { class: "field" }, h("label", { for: "dev-token" }, t("dev_token")), input),
    h("button", { type: "submit", class: "secondary block" }, t("dev_sign_in")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!input.value.trim()) return input.focus();
    session.signIn(input.value, { dev: true });
    done();
  });
  return form;
}

export async function render({ api, query, go, refresh }) {
  const next = query.get("next");
  const done = () => go(next && next.startsWith("/") ? next : "/");
  const document_ = await api.document().catch(() => ({ paths: {} }));
  const sms = Boolean(document_.paths && document_.paths["/v1/auth/sms/verify"]);
  const out = session.token()
    ? h(
        "button",
        {
          type: "button",
          class: "secondary block",
          onclick: async () => {
            const refreshToken = session.refreshToken();
            if (refreshToken) await api.logout(refreshToken).catch(() => null);
            session.signOut();
            refresh();
          },
        },
        t("sign_out"),
      )
    : null;
  return h(
    "section",
    {},
    heading(t("login_title")),
    sms ? smsForm(api, done) : null,
    sms ? h("details", { class: "add" }, h("summary", {}, t("dev_badge")), devForm(done)) : devForm(done),
    out,
  );
}
