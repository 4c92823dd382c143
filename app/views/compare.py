"""Compare: one instance explained by EMAP, LIME, SHAP and IG side by side, and how much they agree."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import resources, state, widgets
from app.plots.attributions import (
    agreement_distribution_figure,
    agreement_matrix_figure,
    agreement_rows_by_pair,
    agreement_table,
    attribution_bars_figure,
    attribution_heatmaps_figure,
    explanation_vectors,
)
from explainers.metrics import AGREEMENT_MEASURES, agreement_matrix

PAGE = "compare"
ATTRIBUTING = ("emap", "lime", "shap", "ig", "deduce", "jsma")
st.title("Compare explanations")
st.caption(
    "EMAP takes part through its negative perturbation −g(x), DeDUCE and JSMA through their pixel "
    "difference, LIME, SHAP and IG through their attributions. Agreement is measured on the rows every "
    "chosen run explains."
)

store = resources.backend().store
runs = widgets.finished_runs(lambda r: r.kind in ATTRIBUTING)
if not runs:
    st.info("No finished runs to compare yet. Start EMAP, LIME, SHAP or IG on the Explain page.")
    st.stop()
datasets = sorted(
    {r.dataset.get("name") or f"upload {r.dataset.get('upload', '')[:6]}" for r in runs}
)
current = next((r for r in runs if r.id == state.run_id()), runs[0])
data_label = st.selectbox(
    "Data set",
    datasets,
    index=datasets.index(
        current.dataset.get("name") or f"upload {current.dataset.get('upload', '')[:6]}"
    ),
    key="cmp_data",
)
runs = [
    r
    for r in runs
    if (r.dataset.get("name") or f"upload {r.dataset.get('upload', '')[:6]}") == data_label
]
exps = {m: e for m, (_, e) in widgets.newest_per_method(runs, store, "cmp_methods").items()}
n_common = min(e.n for e in exps.values())
base = next(iter(exps.values()))
mismatch = [
    m
    for m, e in exps.items()
    if not np.allclose(e.inputs[:n_common], base.inputs[:n_common], atol=1e-6)
]
if mismatch:
    st.error(
        f"{', '.join(mismatch)} explain other rows than {next(iter(exps))}; compare runs made on the same test rows."
    )
    st.stop()

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
    vectors = {m: explanation_vectors(e.subset(slice(0, n_common)))[0] for m, e in exps.items()}
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
        agreement_distribution_figure(agreement_rows_by_pair(vectors, measure), measure),
        key="cmp_dist",
    )
    st.dataframe(agreement_table(matrix), width="stretch")
widgets.share_link(PAGE, {"run": current.id, "i": int(index)})
