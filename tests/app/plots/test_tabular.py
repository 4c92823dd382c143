"""The counterfactual table highlights exactly the changed cells, in original units."""

from __future__ import annotations

import re

import numpy as np
import pytest

from app.plots.tabular import (
    change_frequency_figure,
    counterfactual_frame,
    counterfactual_table,
)
from tests.factories import attribution_explanation, tabular_explanation


def _highlighted_cells(styler) -> set[tuple[int, int]]:
    """(row, column) positions that carry a CSS rule in the rendered HTML."""
    html = styler.to_html()
    style_block = html.split("</style>")[0]
    return {(int(r), int(c)) for r, c in re.findall(r"_row(\d+)_col(\d+)", style_block)}


def test_table_values_in_original_units_and_exact_highlights():
    e = tabular_explanation()
    frame, mask = counterfactual_frame(e, 0)
    assert list(frame.index) == ["age", "capital", "workclass", "sex", "black box's class"]
    assert frame.loc["age", "original"] == 39 and frame.loc["age", "counterfactual"] == 41
    assert frame.loc["age", "change"] == 2
    assert frame.loc["workclass", "change"] == "Private → Self-emp"
    assert frame.loc["black box's class", "counterfactual"] == ">50K"
    assert frame.loc["sex", "pinned"] == "yes", "pinned comes from the method's params"
    expected = {(0, 1), (0, 2), (2, 1), (2, 2), (4, 1), (4, 2)}  # age, workclass, class row
    assert {(r, c) for r, c in zip(*np.nonzero(mask.to_numpy()), strict=True)} == expected
    assert _highlighted_cells(counterfactual_table(e, 0)) == expected


def test_unchanged_row_has_no_highlight_and_zero_perturbation():
    e = tabular_explanation()
    frame, mask = counterfactual_frame(e, 1)
    assert not mask.to_numpy().any()
    assert _highlighted_cells(counterfactual_table(e, 1)) == set()
    assert (
        frame.loc["capital", "original"] == pytest.approx(500.0)
        and frame.loc["capital", "change"] == 0
    )
    styler = counterfactual_table(e, 2)
    assert _highlighted_cells(styler) == {(1, 1), (1, 2), (3, 1), (3, 2)}, (
        "class did not flip: no class highlight"
    )
    assert "NOT reached" in styler.caption


def test_change_frequency_counts_successful_rows_by_default():
    e = tabular_explanation()
    fig = change_frequency_figure(e)
    shares = dict(zip(fig.data[0].y, fig.data[0].x, strict=True))
    assert shares["age"] == 1.0 and shares["workclass"] == 1.0 and shares["capital"] == 0.0
    assert "1 successful" in fig.layout.title.text
    everything = change_frequency_figure(e, only_successful=False)
    shares = dict(zip(everything.data[0].y, everything.data[0].x, strict=True))
    assert shares["capital"] == pytest.approx(1 / 3) and shares["sex (pinned)"] == pytest.approx(
        1 / 3
    )


def test_refuses_attribution_only_results():
    e = attribution_explanation(np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="no counterfactuals"):
        counterfactual_frame(e, 0)
