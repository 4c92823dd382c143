"""Arrow field: EMAP's negative perturbations as arrows, the smallest k% in red as the uncertain region."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import resources, state, widgets
from app.plots.arrows import arrow_norms
from app.plots.triage import smallest_k_mask
from app.text import md, plot_text
from explainers.explanation import Explanation

PAGE = "arrows"
st.title("Arrow field")
st.caption(
    "Each arrow starts at a test point and shows EMAP's **negative perturbation** −g(x): the direction "
    "that feature-weighting methods such as LIME point to. The flip itself lies the other way. The smallest k% "
    "of perturbations, the points nearest the decision boundary, are drawn in red."
)

store = resources.backend().store
runs = widgets.finished_runs(lambda r: r.kind == "emap")
run = widgets.run_picker(runs, key="arrows_run")
if run is None:
    st.info(
        "No finished EMAP run yet. Start one on the Explain page, or open a demo on the Data & model page."
    )
    st.stop()
exp: Explanation = widgets.open_explanation(run, store)

c1, c2, c3 = st.columns([2, 1, 1])
k_pct = c1.slider(
    "Uncertain region: smallest k% of perturbations",
    1,
    50,
    value=state.query_int("k", 10, 1, 50),
    key="k",
    help="The paper highlights the smallest 10% (moons) or 20% (blob).",
)
normalise = c2.toggle(
    "Same length for every arrow",
    value=True,
    key="normalise",
    help="On: directions only (true lengths overlap into a thicket on dense data). Off: true to scale, "
    "the tip is the counterfactual's mirror image.",
)
show_regions = c3.toggle("Black box's regions", value=True, key="regions")
state.set_query({"k": k_pct})

axes = ("identity",)
if exp.inputs.shape[1] > 2:
    how = st.radio(
        "Axes",
        ["PCA of the inputs (a projection)", "Two features"],
        horizontal=True,
        key="axes",
        help="With more than two features the arrows are projected and the background is a 2-D slice.",
    )
    if how.startswith("PCA"):
        axes = ("pca",)
    else:
        names = exp.feature_names
        a, b = st.columns(2)
        fx = a.selectbox("x axis", range(len(names)), format_func=names.__getitem__, key="fx")
        fy = b.selectbox(
            "y axis", range(len(names)), index=1, format_func=names.__getitem__, key="fy"
        )
        axes = ("features", fx, fy)
n = exp.n
selected = state.query_int("i", 0, 0, n - 1)
fig = resources.arrow_field(
    run,
    axes,
    k_pct=k_pct,
    normalise=normalise,
    regions_on=bool(show_regions and run.model),
    selected=selected,
    title=f"EMAP negative perturbations on {plot_text(run.dataset.get('name', 'upload'))} ({n:,} test points)",
)
event = st.plotly_chart(fig, key="field", on_select="rerun", selection_mode="points")
points = event.get("selection", {}).get("points", []) if event else []
if points and points[0].get("customdata") is not None:
    picked = int(np.atleast_1d(points[0]["customdata"])[0])
    if picked != selected:
        state.set_query({"i": picked})
        st.rerun()

norms, _ = arrow_norms(exp)
red = smallest_k_mask(norms, k_pct)
m = exp.metrics
cols = st.columns(4)
cols[0].metric(
    "Surrogate fidelity",
    widgets.fmt(m.get("surrogate_fidelity")),
    help="Share of held-out points where the surrogate's class equals the black box's.",
)
cols[1].metric(
    "Flip rate (black box)",
    widgets.fmt(None if exp.success is None else float(np.mean(exp.success))),
)
cols[2].metric("Points in red", f"{int(red.sum()):,}")
wrong = resources.black_box_errors(run, exp)
cols[3].metric(
    "Black box wrong: red / all",
    "n/a" if wrong is None else f"{wrong[red].mean():.1%} / {wrong.mean():.1%}",
    help="Share of test points the black box misclassifies, among the red points and overall.",
)

st.subheader("Compare with LIME")
lime_runs = widgets.finished_runs(lambda r: r.kind == "lime" and r.dataset == run.dataset)
if not lime_runs:
    st.caption(
        "Run LIME on this data set (Explain page) to see its arrows here and how much the two agree."
    )
else:
    lime_run = widgets.run_picker(lime_runs, key="lime_run", label="LIME run")
    lime = widgets.open_explanation(lime_run, store, stop=False)
    common = 0 if lime is None else min(lime.n, exp.n)
    if lime is None:
        pass  # open_explanation said why; the EMAP field above stands on its own
    elif not np.allclose(lime.inputs[:common], exp.inputs[:common]):
        st.warning(
            "The LIME run explains other rows than this EMAP run, so agreement is not computed."
        )
    else:
        cos, cos10 = resources.agreement(run, lime_run)
        a, b, c = st.columns(3)
        a.metric(
            "Mean cosine, EMAP vs LIME",
            widgets.fmt(cos),
            help=f"Over the {common:,} rows both explain.",
        )
        b.metric("Without EMAP's smallest 10%", widgets.fmt(cos10))
        width = lime.params.get("kernel_width") or "lime's default (0.75 sqrt(d))"
        c.caption(
            f"LIME settings: kernel width {md(width)}, {md(lime.params.get('num_samples', '?'))} "
            f"samples, discretize_continuous {md(lime.params.get('discretize_continuous', '?'))}"
        )
        if st.toggle("Show LIME's arrows", key="lime_arrows"):
            st.plotly_chart(
                resources.arrow_field(
                    lime_run,
                    axes,
                    k_pct=k_pct,
                    normalise=True,
                    regions_on=False,
                    selected=None,
                    title="LIME coefficients as arrows (directions only)",
                    plane_of=run,
                    ranges=(tuple(fig.layout.xaxis.range), tuple(fig.layout.yaxis.range)),
                ),
                key="lime_field",
            )

st.subheader(f"Point {selected}")
st.dataframe(widgets.point_table(exp, selected), hide_index=True, width="stretch")
widgets.share_link(PAGE, {"run": run.id, "k": k_pct, "i": selected})
