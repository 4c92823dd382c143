"""Share and export: a link to a run, a one-page HTML report for stakeholders, PNG figures."""

from __future__ import annotations

import streamlit as st

from app import analysis, resources, widgets
from app.access import EXPORT
from app.jobs.kinds import title
from app.plots.export import chromium_path, figures_png, run_report_html
from app.plots.report import report_figures, report_plane
from app.text import md

PAGE = "report"
st.title("Share & export")
st.caption(
    "Every view's address carries the run, the row and k, so a copied link opens the same view in "
    "another browser. Here: a one-page HTML report of a run, and its figures as PNG."
)

runs = widgets.finished_runs(PAGE)
run = widgets.run_picker(runs, key="rep_run", page=PAGE)
if run is None:
    if not runs:
        st.info("No finished run yet.")
    st.stop()
exp = widgets.open_explanation(run)
if not resources.gate().may(run, EXPORT):
    st.info(
        f"Run {run.id[:8]} was shared with you to view: its report and figures are exported by its "
        "owner. The run's pages stay open to you through the link."
    )
    st.stop()
y_true = resources.true_labels(run, exp)
regions = None
if exp.modality != "image":
    model = widgets.black_box(run)
    if model is not None:
        # As the arrow field page draws it: the regions in the plane the arrows are drawn in.
        regions = analysis.regions_around(model, exp, report_plane(exp), resolution=100)
figures = report_figures(exp, regions, y_true, label=title(run.kind))
st.write(
    f"The report holds the analyst's notes, a summary, {len(figures)} figure(s) with how to "
    "read each ("
    + "; ".join(md(f.title) for f in figures)
    + "), and an appendix with the parameters and raw metrics."
)
notes = st.text_area(
    "Notes for the reader (shown first in the report)",
    key="rep_notes",
    placeholder="What you looked at, what you found, what to decide.",
)
html = run_report_html(
    run, exp, figures, notes=notes, data_name=widgets.data_label(run),
    model_name=(
        widgets.model_name(run.model) if "upload" in (run.model or {}) else exp.provenance.model
    )
    or None, quality={title(run.kind): widgets.stored_quality(run)},
)  # fmt: skip
st.download_button(
    "Download the HTML report",
    html.encode(),
    file_name=f"flipscope-{run.kind}-{run.id[:8]}.html",
    mime="text/html",
    type="primary",
    key="rep_html",
)
if chromium_path() is None:
    st.caption("PNG export needs Chromium on the server (Debian: apt-get install chromium).")
elif st.button(
    "Render the figures as PNG (1920 x 1080, for slides)",
    key="rep_png",
):
    with st.spinner("Rendering with Chromium"):
        pngs = figures_png([f.figure for f in figures])
    for item, png in zip(figures, pngs, strict=True):
        st.download_button(
            f"Download {md(item.title)} (PNG)",
            png,
            file_name=f"{run.id[:8]}-{item.slug}.png",
            mime="image/png",
            key=f"png.{item.slug}",
        )
widgets.quality_panel(run)
widgets.share_link(PAGE, {"run": run.id})
