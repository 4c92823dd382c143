"""Arrow field: one arrow per test point, the run's vector for it (a counterfactual method's
negative perturbation, another method's attribution), the smallest k% in red as the uncertain
region."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import analysis, catalog, resources, state, widgets
from app.jobs.kinds import title
from app.text import md, plot_text
from explainers.explanation import Explanation
from explainers.registry import METHODS

PAGE = "arrows"
st.title("Arrow field")
st.caption(
    "Each arrow starts at a test point. For a method that gives counterfactuals it shows the "
    "**negative perturbation** −(x′ − x): the direction that feature-weighting methods such as "
    "LIME point to; the flip itself lies the other way. The smallest k% of arrows, for "
    "perturbations the points nearest the decision boundary, are drawn in red."
)

runs = widgets.finished_runs(PAGE)
run = widgets.run_picker(runs, key="arrows_run", page=PAGE)
if run is None:
    if not runs:
        st.info(
            "No finished run with counterfactuals or attributions yet. Start one on the Explain page, "
            "or open a demo on the Data & model page."
        )
    st.stop()
exp: Explanation = widgets.open_explanation(run)

c1, c2, c3 = st.columns([2, 1, 1])
k_pct = c1.slider(
    "Uncertain region: smallest k% of arrows",
    1,
    50,
    value=state.query_int("k", 10, 1, 50),
    key="k",
    help="The EMAP paper highlights the smallest 10% (moons) or 20% (blob).",
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

axes: tuple = ("identity",)
if exp.inputs.shape[1] > 2:
    choices = ["PCA of the inputs (a projection)", "Two features"]
    how = st.radio(
        "Axes",
        choices,
        index=1 if state.query_text("axes") == "features" else 0,
        horizontal=True,
        key="axes",
        help="With more than two features the arrows are projected and the background is a 2-D slice.",
    )
    if how.startswith("PCA"):
        axes = ("pca",)
        state.set_query({"axes": "pca"})
    else:
        names = exp.feature_names
        d = len(names)
        # The two features the vectors move most, so the view opens on arrows that point
        # somewhere (a pinned feature never moves: every arrow would be vertical).
        moved = np.argsort(
            -np.abs(analysis.explanation_vectors(exp)[0]).mean(axis=0), kind="stable"
        )
        default_x, default_y = int(moved[0]), int(moved[1])
        a, b = st.columns(2)
        fx = a.selectbox(
            "x axis",
            range(d),
            index=state.query_int("fx", default_x, 0, d - 1),
            format_func=names.__getitem__,
            key="fx",
        )
        fy = b.selectbox(
            "y axis",
            range(d),
            index=state.query_int("fy", default_y, 0, d - 1),
            format_func=names.__getitem__,
            key="fy",
        )
        axes = ("features", fx, fy)
        state.set_query({"axes": "features", "fx": fx, "fy": fy})
# The regions the run's job saved need no black box; other planes (and runs saved before) start it.
model = None
if show_regions and run.model and not resources.saved_regions(run, axes):
    model = widgets.black_box(run)
n = exp.n
selected = state.query_int("i", 0, 0, n - 1)
what = "negative perturbations" if exp.counterfactuals is not None else "attributions"
fig = resources.arrow_field(
    run,
    axes,
    regions=show_regions,
    model=model,
    k_pct=k_pct,
    normalise=normalise,
    selected=selected,
    title=f"{plot_text(title(run.kind))} {what} on "
    f"{plot_text(widgets.data_label(run))} ({n:,} test points)",
)
event = st.plotly_chart(fig, key="field", on_select="rerun", selection_mode="points")
points = event.get("selection", {}).get("points", []) if event else []
if points and points[0].get("customdata") is not None:
    picked = int(np.atleast_1d(points[0]["customdata"])[0])
    if picked != selected:
        state.set_query({"i": picked})
        st.rerun()

sizes, _ = analysis.vector_sizes(exp)
red = analysis.smallest_k_mask(sizes, k_pct)
m = exp.metrics
cols = st.columns(4)
cols[0].metric(
    "Surrogate fidelity",
    widgets.fmt(m.get("surrogate_fidelity")),
    help="Share of held-out points where the surrogate's class equals the black box's "
    "(methods that learn a surrogate).",
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

st.subheader("Compare with another method")
others = widgets.finished_runs(
    PAGE,
    keep=lambda r: (
        r.dataset == run.dataset
        and r.kind != run.kind
        and catalog.ATTRIBUTIONS in resources.run_holding(r).holds
    ),
)
if not others:
    attributing = [i.title for i in METHODS.values() if catalog.ATTRIBUTIONS in i.holds]
    st.caption(
        f"Run a method that gives attributions ({', '.join(attributing)}) on this data set "
        "(Explain page) to see its arrows here and how much the two agree."
    )
else:
    other_run = widgets.run_picker(others, key="other_run", label="Run to compare with")
    other = widgets.open_explanation(other_run, stop=False)
    shared = None if other is None else analysis.shared_rows({"this": exp, "other": other})
    if other is None:
        pass  # open_explanation said why; the field above stands on its own
    elif shared is None:
        st.warning(
            f"The {md(title(other_run.kind))} run explains other rows than this run, so agreement "
            "is not computed."
        )
    else:
        cos, cos10 = resources.agreement(run, other_run)
        mine, theirs = title(run.kind), title(other_run.kind)
        a, b, c = st.columns(3)
        a.metric(
            f"Mean cosine, {mine} vs {theirs}",
            widgets.fmt(cos),
            help=f"Over the {shared:,} rows both explain.",
        )
        b.metric(f"Without {mine}'s smallest 10%", widgets.fmt(cos10))
        settings_text = ", ".join(f"{k} {v}" for k, v in list(other.params.items())[:6])
        c.caption(f"{md(theirs)} settings: {md(settings_text or 'defaults')}")
        if st.toggle(f"Show {md(theirs)}'s arrows", key="other_arrows"):
            st.plotly_chart(
                resources.arrow_field(
                    other_run,
                    axes,
                    k_pct=k_pct,
                    normalise=True,
                    selected=None,
                    title=f"{plot_text(theirs)} as arrows (directions only)",
                    plane_of=run,
                    ranges=(tuple(fig.layout.xaxis.range), tuple(fig.layout.yaxis.range)),
                ),
                key="other_field",
            )

st.subheader(f"Point {selected}")
widgets.table(widgets.point_table(exp, selected), hide_index=True, width="stretch")
widgets.quality_panel(run)
link = {"run": run.id, "k": k_pct, "i": selected}
if axes[0] == "features":
    link.update(axes="features", fx=axes[1], fy=axes[2])
widgets.share_link(PAGE, link)
