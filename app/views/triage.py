"""Uncertainty triage: rank instances by how small a change flips them, and check that against the
black box's own errors on the test split."""

from __future__ import annotations

import streamlit as st

from app import analysis, resources, state, widgets
from app.plots.triage import triage_figure, triage_scatter_figure

PAGE = "triage"
st.title("Uncertainty triage")
st.caption(
    "If a tiny change flips a decision, the model is unsure there. Flag the smallest k% of perturbations "
    "and see how many of the black box's real mistakes on the test split that catches."
)

runs = widgets.finished_runs(PAGE)
run = widgets.run_picker(runs, key="tri_run")
if run is None:
    st.info(
        "No finished run of a method that gives counterfactuals yet. Start one on the Explain page."
    )
    st.stop()
exp = widgets.open_explanation(run)
y_true = resources.true_labels(run, exp)
if y_true is None:
    st.error(
        "This run did not explain the test split's rows in order, so its points cannot be checked against labels."
    )
    st.stop()
wrong = analysis.errors_of(exp, y_true)

keys = analysis.ranking_keys(exp)
rank_by = st.radio("Rank by", keys, horizontal=True, key="tri_rank") if len(keys) > 1 else keys[0]
k_pct = st.slider("Flag the smallest k%", 1, 50, value=state.query_int("k", 10, 1, 50), key="tri_k")
state.set_query({"k": k_pct})
# Small = suspicious, for a perturbation size and a log density alike.
score = analysis.ranking_score(exp, rank_by)
scores = analysis.triage_scores(score, wrong, k_pct)
c = st.columns(4)
c[0].metric("Black box errors", f"{int(wrong.sum()):,} of {exp.n:,}")
c[1].metric(
    f"Precision at {k_pct}%",
    widgets.fmt(scores.get("precision")),
    help="Share of flagged rows the black box gets wrong.",
)
c[2].metric(
    f"Recall at {k_pct}%",
    widgets.fmt(scores.get("recall")),
    help="Share of the black box's errors that are flagged.",
)
c[3].metric(
    "AUROC",
    widgets.fmt(scores.get("auroc")),
    help="0.5: the ranking knows nothing about errors; 1: all errors come first.",
)
left, right = st.columns(2)
left.plotly_chart(
    triage_figure(score, wrong, k_pct=k_pct, score_name=rank_by.replace("_", " ")), key="tri_curve"
)
density = exp.diagnostics.get("original_log_density")
right.plotly_chart(
    triage_scatter_figure(
        analysis.ranking_score(exp, "perturbation_norm"), wrong, density=density, k_pct=k_pct
    ),
    key="tri_scatter",
)
st.subheader("Most suspicious rows")
st.dataframe(analysis.ranking_frame(exp, y_true=y_true, rank_by=rank_by, top=50), width="stretch")
widgets.share_link(PAGE, {"run": run.id, "k": k_pct})
