"""The arrow field in a real browser: a big run's longer legend does not squeeze the plot (at a
fixed 600 px figure a 200k-row field drew its plot about 230 px tall), and the legend stays
clear of the x-axis title."""

from __future__ import annotations

import numpy as np

from app.analysis import decision_regions
from app.plots.arrows import arrow_field_figure
from tests.factories import points_explanation

BOXES = """() => {
  const box = s => document.querySelector(s).getBoundingClientRect();
  const legend = box('.legend'), title = box('.g-xtitle text'), plot = box('.draglayer .xy .nsewdrag');
  return {plot: plot.height, legend_top: legend.top, title_bottom: title.bottom};
}"""


class _Diagonal:
    class_names = ["no", "yes"]

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-(X[:, 0] + X[:, 1])))
        return np.column_stack([1 - p, p])


def _drawn(page, tmp_path, n: int) -> dict:
    exp = points_explanation(n)
    regions = decision_regions(_Diagonal(), (-4.0, 4.0), (-4.0, 4.0), resolution=40)
    fig = arrow_field_figure(exp, k_pct=10, background=regions, selected=0, title="A run")
    path = tmp_path / f"field-{n}.html"
    fig.write_html(path, include_plotlyjs=True, full_html=True)  # plotly.js inline: no network
    page.set_viewport_size({"width": 900, "height": 1400})
    page.goto(path.as_uri())
    page.wait_for_selector(".main-svg .legend")
    return page.evaluate(BOXES)


def test_a_big_runs_legend_does_not_squeeze_the_plot(page, tmp_path):
    small = _drawn(page, tmp_path, 300)
    big = _drawn(page, tmp_path, 200_000)  # density, uncertain points: three more legend rows
    assert big["plot"] >= 0.97 * small["plot"] and small["plot"] > 400, (small, big)
    for drawn in (small, big):
        assert drawn["legend_top"] >= drawn["title_bottom"], drawn
