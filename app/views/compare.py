"""Compare: one instance explained by every method that ran on a data set, side by side, and how
much they agree. A run takes part when its Explanation holds attributions or counterfactuals."""

from __future__ import annotations

import streamlit as st

from app import analysis, state, widgets
from app.plots.attributions import (
    agreement_distribution_figure,
    agreement_matrix_figure,
    attribution_bars_figure,
    attribution_heatmaps_figure,
)
from explainers.metrics import AGREEMENT_MEASURES, agreement_matrix

PAGE = "compare"
st.title("Compare explanations")
st.caption(
    "Every run takes part through one vector per row: its attributions, or for a method that "
    "gives counterfactuals its negative perturbation −(x′ − x). Agreement is measured on the rows "
    "every chosen run explains."
)

runs = widgets.finished_runs(PAGE)
if not runs:
    st.info(
        "No finished runs to compare yet. Start a method that gives attributions or "
        "counterfactuals on the Explain page."
    )
    st.stop()
picked, n_common = widgets.side_by_side(runs, "cmp")
exps = {m: e for m, (_, e) in picked.items()}
current, base = next(iter(picked.values()))

index = st.number_input(
    f"Row (0 to {n_common - 1})",
    0,
    n_common - 1,
    value=state.query_int("i", 0, 0, n_common - 1),
    key="cmp_index",
)
state.set_query({"i": index})
if base.modality == "image":
    fig = attribution_heatmaps_figure(exps, int(index))
else:
    fig = attribution_bars_figure(exps, int(index))
st.plotly_chart(fig, key="cmp_instance")

if len(exps) >= 2:
    vectors = {
        m: analysis.explanation_vectors(e.subset(slice(0, n_common)))[0] for m, e in exps.items()
    }
    matrix = agreement_matrix(vectors)
    st.subheader(f"Agreement over {n_common:,} rows")
    measure = st.radio(
        "Measure",
        AGREEMENT_MEASURES,
        horizontal=True,
        key="cmp_measure",
        help="cosine: direction; spearman: rank order of features; sign: same sign where both are non-zero; "
        "topk: overlap of the 5 largest features.",
    )
    left, right = st.columns(2)
    left.plotly_chart(agreement_matrix_figure(matrix, measure), key="cmp_matrix")
    right.plotly_chart(
        agreement_distribution_figure(analysis.agreement_rows_by_pair(vectors, measure), measure),
        key="cmp_dist",
    )
    st.dataframe(analysis.agreement_table(matrix), width="stretch")
widgets.share_link(PAGE, {"run": current.id, "i": int(index)})
