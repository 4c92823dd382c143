"""Explain: choose a method, set its parameters, start a background job, watch it, cancel it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import catalog, resources, state, widgets
from app.access import CANCEL, RETRY, USE, NotYours
from app.jobs import FAILED, RUNNING, SUCCEEDED
from app.jobs.kinds import title
from app.jobs.resolve import ModelSpec
from app.text import md
from explainers.blackbox import DemoModelMissing
from explainers.registry import METHODS, surrogate_providers

st.title("Explain")
widgets.refuse_foreign_run()
sel = state.selection()
backend = resources.backend()
gate = resources.gate()

try:
    dataset = resources.selected_dataset(sel)
    model_caps = resources.selected_capabilities(sel)
except DemoModelMissing:
    widgets.demo_model_progress(str(sel.dataset.name))
    st.stop()
except (ValueError, LookupError) as exc:
    st.error(
        f"The selected data set or model cannot be opened: {md(exc)}. Pick another on the Data & "
        "model page."
    )
    st.stop()
st.caption(
    f"Data: **{md(dataset.name)}** ({dataset.modality}, {len(dataset.X_test):,} test rows). "
    "Jobs run in the background: closing the tab loses nothing, and results stay after a restart."
)

if sel.model is None:
    st.info("Upload a model on the Data & model page first.")
    st.stop()


def _applicable() -> dict[str, str]:
    """Method kinds that fit this data set and model, with the reason for those that do not."""
    out: dict[str, str] = {}
    for name, info in METHODS.items():
        if dataset.modality not in info.modalities:
            out[name] = f"not for {dataset.modality} data"
        elif (
            "gradients" in info.needs
            and "gradients" not in model_caps
            and not info.accepts_surrogate
        ):
            out[name] = "needs a model with gradients (the MNIST demo's SN-ResNet)"
        else:
            out[name] = ""
    return out


applicable = _applicable()
usable = [k for k, why in applicable.items() if not why]
if not usable:
    st.warning("No explanation method fits this data set and model yet.")
    st.stop()
unusable = {k: why for k, why in applicable.items() if why}
if unusable:
    st.caption(
        "Not available here: "
        + "; ".join(f"{METHODS[k].title}: {why}" for k, why in unusable.items())
    )

kind_name = st.selectbox(
    "Method",
    usable,
    format_func=lambda k: METHODS[k].title,
    key="method",
)
info = METHODS[kind_name]
if info.summary:
    st.caption(info.summary)

opens_in = catalog.views_for(kind_name, dataset.modality)
if opens_in:
    st.caption("Its results show in: " + ", ".join(v.title for v in opens_in) + ".")

model_spec = sel.model
if info.accepts_surrogate and "gradients" in info.needs and "gradients" not in model_caps:
    providers = surrogate_providers()
    named = " or ".join(METHODS[k].title for k in providers) or "a method that learns one"
    surrogates = [
        r
        for r in gate.runs(status=SUCCEEDED, action=USE)
        if r.kind in providers and r.dataset == sel.dataset.to_json()
    ]
    if not surrogates:
        st.info(
            f"This black box gives no gradients, so {info.title} runs on the surrogate network "
            f"of {named}. Train {named} on this data set first."
        )
        st.stop()
    chosen = widgets.run_picker(
        surrogates, key="surrogate_run", label="Run whose surrogate to explain"
    )
    model_spec = ModelSpec("run", chosen.id, chosen.kind)

with st.form("job_form"):
    n_test = len(dataset.X_test)
    rows = st.number_input(
        "Test rows to explain",
        min_value=1,
        max_value=n_test,
        value=info.default_rows(n_test),
        help="The method's default. Methods that search or sample per row can take seconds "
        "per row on a CPU.",
        key=f"rows.{kind_name}",
    )
    values = widgets.params_form(info.load_params(), key=f"params.{kind_name}")
    submitted = st.form_submit_button("Start", type="primary")

if submitted:
    try:
        run_id = backend.submit(
            kind_name,
            dataset=sel.dataset.to_json(),
            model=None if model_spec is None else model_spec.to_json(),
            params={**values, "rows": int(rows)},
            owner=gate.user,
            session=state.session_id(),
        )
    except (ValueError, LookupError, RuntimeError) as exc:
        st.error(f"The job was not started: {md(exc)}")
    else:
        state.set_run(run_id)
        st.toast(f"Started {info.title} ({run_id[:8]})")


@st.fragment(run_every=1.0)
def live_progress(run_id: str) -> None:
    run = gate.run(run_id)
    p = run.progress
    label = f"{title(run.kind)} {run_id[:8]}: {md(p.stage or run.status)}"
    if p.message:
        label += f": {md(p.message)}"
    if run.status == RUNNING:
        label += f" ({widgets.eta_text(p.eta_seconds)})"
    st.progress(min(max(p.fraction, 0.0), 1.0), text=label)
    if not run.finished:
        if gate.may(run, CANCEL) and st.button("Cancel", key=f"cancel.{run_id}"):
            try:
                backend.cancel(run_id, user=gate.user)
            except NotYours as exc:
                st.error(f"The run was not cancelled: {exc}.")
            else:
                st.toast("Cancelling: the job stops within a few seconds")
    else:
        st.rerun()


active = state.run_id()  # refuse_foreign_run above dropped one this user may not view
try:
    run = gate.run(active) if active else None
except NotYours:
    run = None  # deleted since
if active and run is not None:
    if not run.finished:
        live_progress(active)
    elif run.status == SUCCEEDED:
        st.success(
            f"{title(run.kind)} {active[:8]} finished in {run.seconds or 0:.1f} s on {run.device}. "
            "Open a view from the sidebar to see it."
        )
    elif run.status == FAILED:
        st.error(f"{title(run.kind)} {active[:8]} failed: {md(run.error)}")
        if gate.may(run, RETRY) and st.button("Retry", key="retry"):
            try:
                state.set_run(backend.retry(active, user=gate.user, session=state.session_id()))
            except (ValueError, LookupError, RuntimeError) as exc:
                st.error(f"The job was not started again: {md(exc)}")
            else:
                st.rerun()
    else:
        st.warning(f"{title(run.kind)} {active[:8]} was {run.status}.")

st.subheader("Runs")
runs = gate.runs()
if not runs:
    st.caption("No runs yet.")
else:
    table = pd.DataFrame(
        {
            "run": [r.id[:8] for r in runs],
            "method": [title(r.kind) for r in runs],
            "data": [r.dataset.get("name") or "upload" for r in runs],
            "status": [r.status for r in runs],
            "progress": [r.progress.fraction for r in runs],
            "device": [r.device or "" for r in runs],
            "seconds": [round(r.seconds, 1) if r.seconds else None for r in runs],
            "started": [widgets.age_text(r.created_at) for r in runs],
            "reason": [r.error or "" for r in runs],
        }
    )
    picked = st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "progress": st.column_config.ProgressColumn(
                min_value=0.0, max_value=1.0, format="percent"
            )
        },
        on_select="rerun",
        selection_mode="single-row",
        key="runs_table",
    )
    rows_picked = picked.selection.rows if picked and picked.selection else []
    if rows_picked:
        state.set_run(runs[rows_picked[0]].id)
        st.caption(f"Selected run {runs[rows_picked[0]].id[:8]}: the views open it.")
