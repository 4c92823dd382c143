"""The stakeholder report: human titles, names instead of specs, notes first, how to read each
figure, parameters and raw metrics in an appendix, figures fit for print."""

from __future__ import annotations

import html
import re

import numpy as np

from app.plots.export import run_report_html
from app.plots.report import report_figures
from tests.factories import adult_like_emap


def _report(notes: str = "Row 7 looks odd.\n\nAsk the credit team.") -> tuple[str, list]:
    exp = adult_like_emap(40)
    exp.params.update(lam=0.1, pinned=["race", "sex"])
    figures = report_figures(exp, None, exp.predictions, label="EMAP")
    record = {"id": "run0123456789", "kind": "emap", "status": "succeeded",
              "dataset": {"upload": "o_s6HFxyz"}, "model": {"upload": "m_123"}}  # fmt: skip
    page = run_report_html(
        record, exp, figures, notes=notes, data_name="credit.csv", model_name="credit.skops"
    )
    return page, figures


def test_the_report_reads_as_a_document():
    page, figures = _report()
    headings = [html.unescape(h) for h in re.findall(r"<h2[^>]*>(.*?)</h2>", page)]
    assert headings[0] == "Notes from the analyst"
    assert headings[1] == "Summary"
    assert headings[-1] == "Appendix"
    # Human titles, never keys such as arrow_field.
    assert all("_" not in h for h in headings), headings
    assert [f.title for f in figures] == headings[2:-1]
    assert page.count("How to read this:") == len(figures) >= 3
    # The data set and model by name at the top; the specs only in the appendix's run record.
    top = page[: page.index("<h2")]
    assert "EMAP on credit.csv" in top and "credit.skops" in top
    assert page.index("o_s6HFxyz") > page.index('class="appendix"')
    # Parameters named in words beside their names in the code, after the figures.
    assert "Cost of changing numbers (lam)" in page
    assert page.index("Cost of changing numbers") > page.index('class="plotly-graph-div"')
    assert "<p>Row 7 looks odd.</p>" in page and "<p>Ask the credit team.</p>" in page


def test_figures_are_drawn_for_print():
    _, figures = _report()
    arrows = next(f.figure for f in figures if f.slug == "arrow_field")
    assert arrows.layout.title.text.startswith("EMAP: ")  # the method's title, not its key
    for f in figures:
        layout = f.figure.layout
        assert layout.font.size >= 14
        for axis in (layout.xaxis, layout.yaxis):
            assert axis.automargin is True
        title = layout.title.text or ""
        assert all(len(line) <= 60 for line in title.split("<br>")), title
    # Directions only, as the dashboard draws them by default: every arrow's shaft (its first
    # two points; the head follows) has the same length.
    lengths = []
    for trace in (t for t in arrows.data if t.mode == "lines"):
        xy = np.column_stack([np.asarray(trace.x, float), np.asarray(trace.y, float)])
        for arrow in np.split(xy, np.flatnonzero(np.isnan(xy[:, 0]))):
            arrow = arrow[~np.isnan(arrow[:, 0])]
            if len(arrow):
                lengths.append(np.linalg.norm(arrow[1] - arrow[0]))
    assert len(lengths) == 40 and max(lengths) / min(lengths) < 1.01
