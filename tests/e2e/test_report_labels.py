"""The stakeholder report in a real browser: every figure's tick labels and titles are drawn
whole, inside the figure (feature names were cut to their first letters by the dashboard's
10 px margins), at the width of a printed page."""

from __future__ import annotations

from app.plots.export import run_report_html
from app.plots.report import report_figures
from tests.factories import adult_like_emap

LABELS = """() => Array.from(document.querySelectorAll('.plotly-graph-div')).flatMap((div, i) => {
  const svg = div.querySelector('.main-svg').getBoundingClientRect();
  return Array.from(div.querySelectorAll(
    '.xtick text, .ytick text, .gtitle, .g-xtitle text, .g-ytitle text, .legendtext')).map(t => {
      const b = t.getBoundingClientRect();
      return {fig: i, text: t.textContent, left: b.left - svg.left, right: svg.right - b.right,
              top: b.top - svg.top, bottom: svg.bottom - b.bottom, width: b.width};
  });
})"""


def test_report_figure_labels_are_not_clipped(page, tmp_path):
    exp = adult_like_emap(60)
    figures = report_figures(exp, None, exp.predictions, label="EMAP")
    path = tmp_path / "report.html"
    path.write_text(run_report_html(None, exp, figures, data_name="adult.csv"))
    # An A4 page's text width at 96 dpi (210 mm less 2 x 20 mm margins is about 640 px) plus the
    # report's own padding.
    page.set_viewport_size({"width": 720, "height": 1200})
    page.goto(path.as_uri())
    page.wait_for_function(
        f"document.querySelectorAll('.plotly-graph-div .main-svg').length >= {len(figures)}"
    )
    labels = page.evaluate(LABELS)
    assert labels
    clipped = [
        lab for lab in labels
        if lab["width"] > 0 and min(lab["left"], lab["right"], lab["top"], lab["bottom"]) < -1
    ]  # fmt: skip
    assert not clipped, clipped
    changes = next(i for i, f in enumerate(figures) if f.slug == "feature_changes")
    shown = {lab["text"] for lab in labels if lab["fig"] == changes}
    assert {"marital-status", "hours-per-week", "education-num", "occupation"} <= shown
