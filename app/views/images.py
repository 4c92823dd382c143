"""Image counterfactuals: one digit, what each method that gives image counterfactuals changes to
flip it, and what that costs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import analysis, resources, state, widgets
from app.plots.images import (
    PAPER_THRESHOLD,
    image_change_stats,
    image_counterfactual_figure,
    probability_change_figure,
)
from app.text import md

PAGE = "images"
st.title("Image counterfactuals")
st.caption(
    "Original, difference and counterfactual for each method. In the difference, **red** pixels got "
    "brighter (more ink) and **blue** ones darker; all methods share one colour range."
)

runs = widgets.finished_runs(PAGE)
if not runs:
    st.info(
        "No finished image counterfactual run yet. On the Explain page pick an image data set "
        "(MNIST, MNIST 3 vs 8) and a method that gives counterfactuals, or open the precomputed "
        "demo on the Data & model page."
    )
    st.stop()

# The rows every chosen run explains (runs may explain different numbers of test rows).
picked, n_common = widgets.side_by_side(runs, "img")
exps = {m: e for m, (_, e) in picked.items()}
first_run, first = next(iter(picked.values()))
dataset = resources.run_dataset(first_run)
labels = analysis.true_labels(first.subset(slice(0, n_common)), dataset)
wrong = (
    first.predictions[:n_common] != labels if labels is not None else np.zeros(n_common, dtype=bool)
)
order = np.concatenate([np.flatnonzero(wrong), np.flatnonzero(~wrong)])


def _row_label(i: int) -> str:
    said = first.class_names[first.predictions[i]]
    if labels is None:
        return f"image {i}: black box says {said}"
    mark = " · misclassified" if wrong[i] else ""
    return f"test image {i}: true {dataset.class_names[labels[i]]}, black box says {said}{mark}"


start = state.query_int("i", int(order[0]), 0, n_common - 1)
index = st.selectbox(
    "Image (misclassified ones first)",
    order.tolist(),
    index=order.tolist().index(start),
    format_func=_row_label,
    key="img_index",
)
state.set_query({"i": index})
threshold = st.toggle(
    f"Hide changes smaller than {PAPER_THRESHOLD} (the EMAP paper's figure)",
    value=False,
    key="img_threshold",
)
thr = PAPER_THRESHOLD if threshold else None

targets = {name: e.class_names[int(e.targets[index])] for name, e in exps.items()}
st.caption("Target class: " + ", ".join(f"{m}: {md(t)}" for m, t in targets.items()))
fig = image_counterfactual_figure(exps, index, threshold=thr)
st.plotly_chart(fig, key="img_fig")

model = widgets.black_box(first_run)
if model is not None:
    before, after = analysis.class_probabilities(model, exps, index)
    st.plotly_chart(
        probability_change_figure(
            before,
            after,
            first.class_names,
            original=int(first.predictions[index]),
            target=int(first.targets[index]),
        ),
        key="img_proba",
    )

rows = [{"method": name, **image_change_stats(e, index, thr)} for name, e in exps.items()]
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
st.caption(
    "Log density: the DDU feature density of the counterfactual under the target class; higher means more "
    "like real digits of that class. Only runs on a model with a feature density (the SN-ResNet) have it."
)
widgets.share_link(PAGE, {"run": first_run.id, "i": index})  # type: ignore[attr-defined]
