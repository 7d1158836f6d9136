"""A hospital report as CSV (one row per department and one for the hospital) and as
plots (PNG or SVG), drawn with matplotlib's object API (no pyplot state: a figure per
call, safe in a worker thread)."""

from __future__ import annotations

import csv
import io
from typing import Final, Literal

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from inventory.reports.figures import LEAD_BUCKETS, Figures, HospitalReport

#: What a plot shows: the rates per department, or the cancellations' lead times.
PlotKind = Literal["rates", "cancellations"]
PLOT_KINDS: Final[tuple[PlotKind, ...]] = ("rates", "cancellations")
PlotFormat = Literal["png", "svg"]
MEDIA_TYPES: Final[dict[str, str]] = {"png": "image/png", "svg": "image/svg+xml"}

CSV_COLUMNS: Final = (
    "department_id",
    "name",
    "schedules",
    "capacity",
    "booked",
    "utilisation",
    "filled_first_hour",
    "sold_out",
    "sold_out_share",
    "median_sell_out_s",
    "p90_sell_out_s",
    "cancelled",
    "cancellation_rate",
    *(f"cancelled_{name}" for name, _ in LEAD_BUCKETS),
    "rejected",
    "visited",
    "no_show",
    "no_show_rate",
    "waitlist_joined",
    "waitlist_offered",
    "waitlist_taken",
    "waitlist_lapsed",
    "waitlist_conversion",
    "waitlist_offer_take_rate",
)


def _row(department_id: str, name: str, figures: Figures) -> list[object]:
    values = figures.as_dict()
    leads = values.pop("cancellation_leads")
    values |= {f"cancelled_{bucket}": count for bucket, count in leads.items()}
    values |= {"department_id": department_id, "name": name}
    return ["" if values[column] is None else values[column] for column in CSV_COLUMNS]


def report_csv(report: HospitalReport) -> bytes:
    """One row per department, then the hospital's (department_id ``*``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for department in report.departments:
        writer.writerow(_row(department.department_id, department.name, department.figures))
    writer.writerow(_row("*", "all departments", report.total))
    return out.getvalue().encode()


def report_plot(report: HospitalReport, kind: PlotKind, image: PlotFormat) -> bytes:
    """The report drawn as ``kind``, encoded as ``image``."""
    figure = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    names = [d.department_id for d in report.departments] + ["all"]
    every = [d.figures for d in report.departments] + [report.total]
    positions = list(range(len(names)))
    if kind == "rates":
        series = (
            ("utilisation", [f.utilisation for f in every]),
            ("filled 1 h after release", [f.filled_first_hour for f in every]),
            ("sold out", [f.sold_out_share for f in every]),
            ("cancelled", [f.cancellation_rate for f in every]),
            ("no-show", [f.no_show_rate for f in every]),
            ("waitlist booked", [f.waitlist_conversion for f in every]),
        )
        width = 0.8 / len(series)
        for index, (label, values) in enumerate(series):
            axes.bar(
                [p + (index - (len(series) - 1) / 2) * width for p in positions],
                [0.0 if v is None else v for v in values],
                width,
                label=label,
            )
        axes.set_ylim(0, 1)
        axes.set_ylabel("share")
        axes.set_title(f"{report.hospital_id}: {report.first} to {report.last}")
    else:
        bottom = [0.0] * len(names)
        for bucket, _ in LEAD_BUCKETS:
            counts = [float(f.cancellation_leads[bucket]) for f in every]
            axes.bar(positions, counts, 0.6, bottom=bottom, label=bucket.replace("_", " "))
            bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
        axes.set_ylabel("cancelled bookings")
        axes.set_title(f"{report.hospital_id}: cancellations by time before the session")
    axes.set_xticks(positions, names, rotation=30, ha="right")
    axes.legend(fontsize="small", loc="upper right")
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image, metadata=_metadata(image))
    return buffer.getvalue()


def _metadata(image: PlotFormat) -> dict[str, str | None]:
    # No creation date or software version in the file: the same report, the same bytes.
    if image == "svg":
        return {"Date": None, "Creator": None}
    return {"Software": None}
