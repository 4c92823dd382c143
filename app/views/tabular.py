"""Tabular counterfactuals: the EMAP paper's Table 1 for any row of any run whose Explanation holds
counterfactuals of tabular data, and how often each feature changes."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import state, widgets
from app.plots.tabular import change_frequency_figure, counterfactual_table
from app.text import md

PAGE = "tabular"
st.title("Counterfactual table")
st.caption(
    "For one row: its features, the change the method found that flips the black box, and the "
    "black box's class before and after, all in original units. Changed cells are highlighted."
)

runs = widgets.finished_runs(PAGE)
run = widgets.run_picker(runs, key="tab_run")
if run is None:
    st.info(
        "No finished counterfactual run on tabular data yet. Start a method that gives "
        "counterfactuals on UCI Adult (Explain page) or on your own upload, or open the "
        "precomputed Adult demo on the Data & model page."
    )
    st.stop()
exp = widgets.open_explanation(run)
pinned = tuple(run.params.get("pinned") or ())
if pinned:
    st.caption(
        f"This run pinned {md(', '.join(pinned))}: the method was not allowed to change them."
    )
elif "pinned" in exp.params:
    st.caption(
        "No feature was pinned in this run. To keep features such as race and sex fixed, start "
        "the method with them in `pinned` on the Explain page."
    )

n = exp.n
only_flips = st.toggle(
    "Only rows whose flip succeeded (judged by the black box)", value=False, key="tab_only_flips"
)
candidates = np.flatnonzero(exp.success) if only_flips and exp.success is not None else np.arange(n)
if len(candidates) == 0:
    st.warning("No row of this run flipped the black box.")
    st.stop()
start = state.query_int("i", int(candidates[0]), 0, n - 1)
index = int(
    st.number_input(
        f"Row (0 to {n - 1})",
        min_value=0,
        max_value=n - 1,
        value=start if start in candidates else int(candidates[0]),
        key="tab_index",
    )
)
state.set_query({"i": index})

cls = exp.class_names
before = cls[int(exp.predictions[index])]
after = (
    cls[int(exp.counterfactual_predictions[index])]
    if exp.counterfactual_predictions is not None
    else "?"
)
flipped = exp.success is not None and bool(exp.success[index])
c1, c2, c3 = st.columns(3)
c1.metric("Black box's class", md(before))
c2.metric(
    "After the change",
    md(after),
    delta="flipped" if flipped else "not flipped",
    delta_color="normal" if flipped else "inverse",
)
if "norm_percentile" in exp.diagnostics:
    pct = float(exp.diagnostics["norm_percentile"][index])
    c3.metric(
        "Perturbation size percentile",
        f"{pct:.0f}",
        help="Low: a small change flips this row, so it lies near the decision boundary (uncertain).",
    )
st.dataframe(counterfactual_table(exp, index, pinned=pinned), width="stretch")

st.subheader("How often each feature changes")
st.plotly_chart(change_frequency_figure(exp, pinned=pinned), key="tab_freq")
widgets.share_link(PAGE, {"run": run.id, "i": index})
