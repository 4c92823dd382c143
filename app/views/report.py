"""Share and export: a link to a run, a one-page HTML report for stakeholders, PNG figures."""

from __future__ import annotations

import streamlit as st

from app import analysis, resources, widgets
from app.access import EXPORT
from app.jobs.kinds import title
from app.plots.export import chromium_path, figures_png, run_report_html
from app.plots.report import report_figures

PAGE = "report"
st.title("Share & export")
st.caption(
    "Every view's address carries the run, the row and k, so a copied link opens the same view in "
    "another browser. Here: a one-page HTML report of a run, and its figures as PNG."
)

runs = widgets.finished_runs(PAGE)
run = widgets.run_picker(runs, key="rep_run")
if run is None:
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
if exp.modality != "image" and exp.inputs.shape[1] == 2:
    model = widgets.black_box(run)
    if model is not None:
        regions = analysis.regions_around(model, exp, resolution=100)
figures = report_figures(exp, regions, y_true, label=title(run.kind))
st.write(f"The report holds {len(figures)} figure(s): {', '.join(figures)}.")
notes = st.text_area("Notes for the reader (optional)", key="rep_notes")
html = run_report_html(run, exp, figures, notes=notes)
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
elif st.button("Render the figures as PNG", key="rep_png"):
    with st.spinner("Rendering with Chromium"):
        pngs = figures_png(list(figures.values()))
    for (name, _), png in zip(figures.items(), pngs, strict=True):
        st.download_button(
            f"Download {name}.png",
            png,
            file_name=f"{run.id[:8]}-{name}.png",
            mime="image/png",
            key=f"png.{name}",
        )
st.subheader("Link to this run")
widgets.share_link(PAGE, {"run": run.id})
