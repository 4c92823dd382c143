"""Image counterfactuals: one digit, what EMAP, DeDUCE and JSMA change to flip it, and what that costs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import resources, state, widgets
from app.plots.images import (
    PAPER_THRESHOLD,
    class_probabilities,
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

store = resources.backend().store
runs = widgets.finished_runs(
    lambda r: r.kind in ("emap", "deduce", "jsma") and resources.modality(r) == "image"
)
if not runs:
    st.info(
        "No finished image counterfactual run yet. On the Explain page pick MNIST (DeDUCE, JSMA) or "
        "MNIST 3 vs 8 (EMAP), or open the precomputed demo on the Data & model page."
    )
    st.stop()

datasets = sorted({r.dataset.get("name") or "upload" for r in runs})
wanted = next((r for r in runs if r.id == state.run_id()), runs[0])
data_name = st.selectbox(
    "Data set",
    datasets,
    index=datasets.index(wanted.dataset.get("name") or "upload"),
    key="img_data",
)
runs = [r for r in runs if (r.dataset.get("name") or "upload") == data_name]
picked = widgets.newest_per_method(runs, store, "img_methods")
exps = {m: e for m, (_, e) in picked.items()}
first_run, first = next(iter(picked.values()))

dataset = resources.run_dataset(first_run)
# Rows every chosen run explains (runs may explain different numbers of test rows).
n_common = min(e.n for e in exps.values())
labels = dataset.y_test[:n_common]
wrong = first.predictions[:n_common] != labels
order = np.concatenate([np.flatnonzero(wrong), np.flatnonzero(~wrong)])


def _row_label(i: int) -> str:
    mark = " · misclassified" if wrong[i] else ""
    return f"test image {i}: true {dataset.class_names[labels[i]]}, black box says {first.class_names[first.predictions[i]]}{mark}"


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

model = resources.run_model(first_run)
if model is not None:
    before, after = class_probabilities(model, exps, index)
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
    "like real digits of that class. Only DeDUCE and JSMA runs on the SN-ResNet have it."
)
widgets.share_link(PAGE, {"run": first_run.id, "i": index})  # type: ignore[attr-defined]
