"""Tabular counterfactuals: the EMAP paper's Table 1 for any row of any run whose Explanation holds
counterfactuals of tabular data, and how often each feature changes."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import analysis, resources, state, widgets
from app.cf_export import ExportError, counterfactual_csv
from app.jobs.whatif import WhatIf, WhatIfError
from app.plots.tabular import change_frequency_figure, counterfactual_table, options_table
from app.text import md
from datasets.base import CategoricalFeature
from explainers.blackbox import DemoModelMissing

PAGE = "tabular"
st.title("Counterfactual table")
st.caption(
    "For one row: its features, the change the method found that flips the black box, and the "
    "black box's class before and after, all in original units. Changed cells are highlighted."
)

runs = widgets.finished_runs(PAGE)
run = widgets.run_picker(runs, key="tab_run", page=PAGE)
if run is None:
    if not runs:
        st.info(
            "No finished counterfactual run on tabular data yet. Start a method that gives "
            "counterfactuals on UCI Adult (Explain page) or on your own upload, or open the "
            "precomputed Adult demo on the Data & model page."
        )
    st.stop()
stored = widgets.open_explanation(run)
exp = widgets.counterfactual_version({"run": stored}, "tab_raw")["run"]
showing_raw = exp is not stored
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

counts = analysis.status_counts(stored)
if counts is not None:
    st.caption(
        f"Verified on the black box: {counts['as is']} as is, {counts['repaired']} repaired, "
        f"**{counts['failed']} failed** (no counterfactual that flips the black box found)."
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
        widgets.PERCENTILE.capitalize(),
        widgets.percentile_text(pct),
        help="Low: a small change flips this row, so it lies near the decision boundary "
        "(uncertain)." + (" Measured on the verified counterfactual." if stored.verified else ""),
    )
if showing_raw:
    st.warning(
        "Showing the raw counterfactual: the method's one pass, as the EMAP paper reports it, "
        + ("which flips the black box." if flipped else "which does NOT flip the black box.")
    )
else:
    widgets.verification_status(exp, index)
st.dataframe(counterfactual_table(exp, index, pinned=pinned), width="stretch")
options = options_table(stored, index)
if options is not None:
    st.subheader("Options for this row")
    st.caption(
        "Other changes that flip the black box, side by side; each is verified on the black box "
        "and kept off a feature an earlier option relies on most."
    )
    st.dataframe(options, width="stretch")
try:
    csv_bytes = counterfactual_csv(stored)
except ExportError as exc:
    st.caption(str(exc))
else:
    st.download_button(
        "Download the counterfactuals (CSV)",
        data=csv_bytes,
        file_name=f"counterfactuals-{run.id}.csv",
        mime="text/csv",
        help="One line per option of every row, original units (as `flipscope jobs export`).",
        key="tab_csv",
    )


def _step(std: float) -> float:
    """A number input's step: about a tenth of the feature's spread, rounded to a power of ten."""
    return float(10 ** np.floor(np.log10(std / 10))) if std > 0 else 0.1


def what_if_panel(what: WhatIf, row: np.ndarray, row_class: int, key: str) -> None:
    """Inputs for every original feature of ``row`` (whose black-box class is ``row_class``;
    pinned features locked) and, on every edit, the black box's class and probability and the method's counterfactual for the edited row."""
    start = what.values_of(row)
    values: dict[str, object] = {}
    cols = st.columns(4)
    features = [*what.schema.continuous, *what.schema.categorical]
    for i, f in enumerate(features):
        locked = f.name in what.pinned
        note = " Pinned in this run: the method may not change it." if locked else ""
        with cols[i % 4]:
            if isinstance(f, CategoricalFeature):
                values[f.name] = st.selectbox(
                    f.name, f.categories, index=f.categories.index(str(start[f.name])),
                    disabled=locked, key=f"{key}.{f.name}", help=f"Category.{note}",
                )  # fmt: skip
                continue
            lo, hi = f.lo * f.std + f.mean, f.hi * f.std + f.mean
            seen = f" Training range {lo:.4g} to {hi:.4g}." if np.isfinite([lo, hi]).all() else ""
            if f.integer:
                v = int(start[f.name])  # type: ignore[call-overload]
                values[f.name] = st.number_input(
                    f.name, value=v, step=1, disabled=locked, key=f"{key}.{f.name}",
                    help=f"Whole number.{seen}{note}",
                )  # fmt: skip
            else:
                step = _step(f.std)
                decimals = max(0, -int(np.floor(np.log10(step))))
                values[f.name] = st.number_input(
                    f.name, value=round(float(start[f.name]), decimals),  # type: ignore[arg-type]
                    step=step, format=f"%.{decimals}f", disabled=locked, key=f"{key}.{f.name}",
                    help=f"In original units.{seen}{note}",
                )  # fmt: skip
    verify = what.verifies and st.toggle(
        "Check the counterfactual on the black box (repair, shrink and sparsify it as the run "
        "did: 10 to 20 black-box calls, slower)",
        value=False,
        key=f"{key}.verify",
    )
    try:
        answer = what.ask(values, start, verify=verify)
    except WhatIfError as exc:
        st.error(f"{md(exc)}.")
        return
    exp = answer.explanation
    names = what.class_names
    cls_now, cls_cf = answer.predicted, int(exp.counterfactual_predictions[0])  # type: ignore[index]
    edits = [
        f"{md(n)} {md(start[n])} → {md(values[n])}"
        for n in start
        if str(start[n]) != str(values[n])
    ]
    c1, c2, c3 = st.columns(3)
    c1.metric(
        "Black box on the edited row",
        md(names[cls_now]),
        delta=None if not edits else "changed by the edit" if cls_now != row_class else "unchanged",
        delta_color="off",
        delta_arrow="off",
    )
    c2.metric(f"Probability of {md(names[cls_now])}", f"{answer.proba[cls_now]:.1%}")
    c3.metric(
        "Its counterfactual's class",
        md(names[cls_cf]),
        delta="flips" if answer.flipped else "does not flip",
        delta_color="normal" if answer.flipped else "inverse",
        delta_arrow="off",
        help=f"Judged by the black box: {answer.counterfactual_proba[cls_cf]:.1%} for "
        f"{names[cls_cf]}.",
    )
    if not answer.flipped and not verify and what.verifies:
        st.warning(
            "The method's one pass does not flip the black box for this row. Switch on the check "
            "above to repair it on the black box, as the run did for its own rows."
        )
    st.caption(
        ("Edited: " + "; ".join(edits) + ". " if edits else "No value edited yet. ")
        + f"Server time for this edit: {answer.seconds * 1000:.0f} ms ("
        + ("verified on the black box" if verify else "EMAP's one pass, judged by the black box")
        + ")."
    )
    st.dataframe(
        counterfactual_table(exp, 0, pinned=what.pinned, name="The edited row"), width="stretch"
    )


st.subheader("What if this row were different?")
st.caption(
    "Change the row's values in original units: the black box's class and the smallest change "
    "the method finds that flips it follow every edit. Pinned features are locked."
)
try:
    what = resources.what_if(run)
except DemoModelMissing:
    widgets.demo_model_progress(str(run.dataset.get("name")))
except WhatIfError as exc:
    st.info(f"The what-if editor cannot open this run: {md(exc)}.")
else:
    what_if_panel(
        what, exp.inputs[index], int(exp.predictions[index]), key=f"whatif.{run.id[:8]}.{index}"
    )

st.subheader("How often each feature changes")
st.plotly_chart(change_frequency_figure(exp, pinned=pinned), key="tab_freq")
widgets.quality_panel(run)
widgets.share_link(PAGE, {"run": run.id, "i": index})
