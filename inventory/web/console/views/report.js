// 报表: the hospital's figures over a range of visit dates (get_hospital_report) and the
// report drawn (get_hospital_report_plot, PNG). The image needs the operator's token, so
// it is fetched and shown from a data: URL (the policy allows images from this origin
// and data: only).

import { h, fill } from "../../shared/dom.js";
import { addDays, percent, todayIn } from "../../shared/format.js";
import { t } from "../i18n.js";
import { heading, problem, table } from "../ui.js";

function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function figures(report) {
  const rows = [{ name: t("all_departments"), ...report.total }, ...report.departments];
  return table(
    t("report_caption"),
    [
      [t("department"), (r) => r.name],
      [t("schedules"), (r) => r.schedules],
      [t("capacity"), (r) => r.capacity],
      [t("booked"), (r) => r.booked],
      [t("utilisation"), (r) => percent(r.utilisation)],
      [t("filled_first_hour"), (r) => percent(r.filled_first_hour)],
      [t("sold_out_share"), (r) => percent(r.sold_out_share)],
      [t("median_sell_out"), (r) => (r.median_sell_out_s === null ? "–" : `${Math.round(r.median_sell_out_s)} s`)],
      [t("cancellation_rate"), (r) => percent(r.cancellation_rate)],
      [t("no_show_rate"), (r) => percent(r.no_show_rate)],
      [t("waitlist_joined"), (r) => r.waitlist_joined],
      [t("waitlist_conversion"), (r) => percent(r.waitlist_conversion)],
    ],
    rows,
  );
}

export async function render({ api, query, go, hospitalId, timeZone }) {
  // By default the last 30 days and the next 14 (booked ahead: a release's fill shows).
  const to = query.get("to") || addDays(todayIn(timeZone), 14);
  const from = query.get("from") || addDays(todayIn(timeZone), -30);
  const kind = query.get("kind") || "rates";
  const fromInput = h("input", { id: "report-from", type: "date", value: from, required: true });
  const toInput = h("input", { id: "report-to", type: "date", value: to, required: true });
  const kindInput = h(
    "select",
    { id: "report-kind" },
    ["rates", "cancellations"].map((k) => h("option", { value: k, selected: k === kind }, t(`plot_${k}`))),
  );
  const form = h(
    "form",
    { class: "toolbar" },
    h("div", { class: "field inline" }, h("label", { for: "report-from" }, t("from")), fromInput),
    h("div", { class: "field inline" }, h("label", { for: "report-to" }, t("to")), toInput),
    h("div", { class: "field inline" }, h("label", { for: "report-kind" }, t("plot_kind")), kindInput),
    h("button", { type: "submit", class: "primary" }, t("show")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go(`/report?from=${fromInput.value}&to=${toInput.value}&kind=${kindInput.value}`);
  });
  const body = h("div", {});
  const plot = h("figure", { class: "plot" });
  try {
    const report = await api.report(hospitalId, from, to);
    fill(body, figures(report));
    const image = await api.reportPlot(hospitalId, from, to, kind);
    fill(
      plot,
      h("img", { src: await dataUrl(image), alt: t(`plot_${kind}_alt`, { from, to }) }),
      h("figcaption", { class: "muted small" }, t(`plot_${kind}`)),
    );
  } catch (error) {
    fill(body, problem(error));
  }
  return h("section", {}, heading(t("report_title")), form, body, plot);
}
