"""Reusable widgets: a form built from a Params dataclass, run progress, run pickers.

Widgets and layout only; no computation. Forms come from ``explainers.base.param_specs``, so a
new method's parameters appear here with their defaults, bounds and help without UI code.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import streamlit as st

from app.text import md
from explainers.base import ParamSpec, param_specs


def _widget(spec: ParamSpec, key: str) -> Any:
    label = spec.name.replace("_", " ")
    if spec.choices is not None:
        options = list(spec.choices)
        return st.selectbox(
            label, options, index=options.index(spec.default), help=spec.help, key=key
        )
    if spec.type is bool:
        return st.checkbox(label, value=bool(spec.default), help=spec.help, key=key)
    if spec.type is int:
        return st.number_input(
            label,
            value=int(spec.default),
            min_value=None if spec.lo is None else int(spec.lo),
            max_value=None if spec.hi is None else int(spec.hi),
            step=1,
            help=spec.help,
            key=key,
        )
    if spec.type is float:
        return st.number_input(
            label,
            value=float(spec.default),
            min_value=None if spec.lo is None else float(spec.lo),
            max_value=None if spec.hi is None else float(spec.hi),
            format="%g",
            help=spec.help,
            key=key,
        )
    if spec.type is tuple:
        text = st.text_input(
            label, value=", ".join(map(str, spec.default)), help=spec.help, key=key
        )
        return tuple(v.strip() for v in text.split(",") if v.strip())
    return st.text_input(
        label, value="" if spec.default is None else str(spec.default), help=spec.help, key=key
    )


def params_form(
    params_cls: type, key: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Widgets for every declared parameter (advanced ones folded away); returns changed values only."""
    specs = [s for s in param_specs(params_cls) if s.name not in (overrides or {})]
    values: dict[str, Any] = {}
    basic = [s for s in specs if not s.advanced]
    advanced = [s for s in specs if s.advanced]
    cols = st.columns(3)
    for i, spec in enumerate(basic):
        with cols[i % 3]:
            values[spec.name] = _widget(spec, f"{key}.{spec.name}")
    if advanced:
        with st.expander("Advanced parameters"):
            cols = st.columns(3)
            for i, spec in enumerate(advanced):
                with cols[i % 3]:
                    values[spec.name] = _widget(spec, f"{key}.{spec.name}")
    changed = {
        k: v for k, v in values.items() if v != next(s.default for s in specs if s.name == k)
    }
    return {**changed, **(overrides or {})}


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "estimating time left"
    if seconds < 60:
        return f"about {seconds:.0f} s left"
    return f"about {seconds / 60:.0f} min left"


def age_text(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    age = time.time() - timestamp
    if age < 90:
        return f"{age:.0f} s ago"
    if age < 5400:
        return f"{age / 60:.0f} min ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def data_label(run: Any) -> str:
    """How a page names a run's data set: the built-in name, or "upload" and the id's start."""
    return run.dataset.get("name") or f"upload {str(run.dataset.get('upload', ''))[:6]}"


def run_label(run: Any) -> str:
    from app.jobs.kinds import title

    data = data_label(run)
    # A fixed time, not "5 s ago": widget options must not change between reruns.
    when = time.strftime("%d %b %H:%M", time.localtime(run.finished_at or run.created_at))
    return f"{title(run.kind)} on {data} · {run.id[:8]} · {when}"


def share_link(page: str, params: dict[str, Any]) -> None:
    """A copyable link that opens this page with these query parameters in any browser. With
    sign-in on, a link naming a run (``params["run"]``) carries the run's share token
    (``share=``), which lets whoever holds the link view that run and nothing else; only the
    run's owner, or a holder of its link, gets it (``app.access.Gate.share_token``)."""
    from urllib.parse import urlencode

    from app import resources

    if params.get("run"):
        gate = resources.gate()
        # A record that cannot be updated: the link still opens the run for its owner.
        with contextlib.suppress(LookupError, OSError, ValueError):
            params = {**params, "share": gate.share_token(gate.run(params["run"]))}
    base = str(getattr(st.context, "url", "") or "").split("?")[0].rstrip("/")
    root = base.rsplit("/", 1)[0] if base.endswith(page) else base
    query = urlencode({k: v for k, v in params.items() if v is not None})
    st.code(f"{root}/{page}?{query}", language=None)


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def refuse_foreign_run() -> None:
    """If the URL (or this session) names a run this user may not view, say so, with the same
    words whether it exists or not, and forget it, so the page opens the user's own runs."""
    from app import resources, state
    from app.access import NotYours

    wanted = state.run_id()
    if not wanted:
        return
    try:
        resources.gate().run(wanted)
    except NotYours as exc:
        st.error(
            f"The link's run cannot be opened: {exc}. A run opens for its owner, or through the "
            "share link shown on its page (it carries share=...)."
        )
        state.drop_run()


def finished_runs(page: str, keep: Any = None) -> list[Any]:
    """Succeeded runs that the view ``page`` shows (``app.catalog``: by what their Explanation
    holds and its modality), that this user may view and ``keep(run)`` accepts, newest first:
    their own, those without owner (demos) and those whose share link this session was opened
    with (all of them without sign-in). A run in the URL that this user may not view is refused
    first (``refuse_foreign_run``)."""
    from app import catalog, resources
    from app.jobs import SUCCEEDED

    refuse_foreign_run()
    view = catalog.view(page)
    runs = resources.gate().runs(status=SUCCEEDED)
    return [
        r
        for r in runs
        if r.has_explanation and view.shows(resources.run_holding(r)) and (keep is None or keep(r))
    ]


def open_explanation(run: Any, stop: bool = True) -> Any:
    """The run's Explanation for a view; for a run whose results cannot be read (a damaged or
    missing artifact, an unreadable disk) an error naming that run and the fault, then ``st.stop()``
    (or None when ``stop`` is False). No traceback: the pickers above the error stay, so every
    other run still opens."""
    from app import resources
    from app.access import NotYours
    from app.jobs import RunStateError
    from explainers.explanation import ExplanationFormatError

    try:
        return resources.run_explanation(run)
    except NotYours as exc:
        st.error(f"Run {run.id[:8]}: {exc}.")
        if stop:
            st.stop()
        return None
    except (ExplanationFormatError, RunStateError, OSError) as exc:
        # The store names files inside the run, never where the server keeps them.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        st.error(
            f"Run {run.id[:8]}: this run's results cannot be read: {md(reason)}; re-run it on the "
            "Explain page."
        )
        if stop:
            st.stop()
        return None


def newest_per_method(runs: list[Any], key: str) -> dict[str, tuple[Any, Any]]:
    """The newest run of each method in ``runs`` (newest first), a multiselect of those methods
    (all chosen by default), and ``{method title: (run, Explanation)}`` for the chosen ones, in
    order; ``st.stop()`` when none is chosen."""
    from app.jobs.kinds import title

    newest: dict[str, Any] = {}
    for r in runs:
        newest.setdefault(r.kind, r)
    chosen = st.multiselect(
        "Methods", list(newest), default=list(newest), format_func=title, key=key
    )
    if not chosen:
        st.stop()
    return {title(m): (newest[m], open_explanation(newest[m])) for m in chosen}


def side_by_side(runs: list[Any], key: str) -> tuple[dict[str, tuple[Any, Any]], int]:
    """One data set's runs side by side: a data set picker (the URL's run's preselected), the
    newest run of each method (``newest_per_method``), and how many leading rows they all
    explain; an error and ``st.stop()`` when they explain different rows."""
    from app import analysis, state

    labels = sorted({data_label(r) for r in runs})
    wanted = next((r for r in runs if r.id == state.run_id()), runs[0])
    label = st.selectbox(
        "Data set", labels, index=labels.index(data_label(wanted)), key=f"{key}_data"
    )
    picked = newest_per_method([r for r in runs if data_label(r) == label], f"{key}_methods")
    shared = analysis.shared_rows({m: e for m, (_, e) in picked.items()})
    if shared is None:
        st.error(
            f"{md(', '.join(picked))} do not explain the same rows; pick runs made on the same "
            "test rows."
        )
        st.stop()
    return picked, shared


def black_box(run: Any) -> Any:
    """The black box a run was made with, for drawing it (regions, probabilities), or None; while
    a demo black box is being built, that build's progress instead (``demo_model_progress``)."""
    from app import resources
    from explainers.blackbox import DemoModelMissing

    try:
        return resources.run_model(run)
    except DemoModelMissing:
        demo_model_progress(str(run.dataset.get("name")))
        return None


def run_picker(runs: list[Any], key: str, label: str = "Run") -> Any:
    """Pick one of ``runs``; the URL's run is preselected, and choosing one puts it in the URL."""
    from app import state

    if not runs:
        return None
    ids = [r.id for r in runs]
    wanted = state.run_id()
    index = ids.index(wanted) if wanted in ids else 0
    chosen = st.selectbox(
        label,
        ids,
        index=index,
        format_func=lambda i: run_label(runs[ids.index(i)]),
        key=key,
    )
    if label == "Run" and st.query_params.get("run") != chosen:
        state.set_run(chosen)  # the URL names the run on view, so a copied link opens it
    return runs[ids.index(chosen)]


def demo_model_progress(name: str) -> None:
    """The demo black box of ``name`` is being built by a ``blackbox`` job (a page never trains
    one): queue that job if nothing builds it yet, and show its progress until it ends; then the
    page runs again with the model. A failed or cancelled build says why and offers to start
    it again."""
    from app import resources
    from app.jobs.huey_backend import JobLimitError, QueueUnavailable

    try:
        run = resources.demo_model_job(name)
        if resources.demo_build_failed(run):
            reason = run.error or run.status
            st.error(
                f"Building the demo black box of {md(name)} did not finish (run {run.id[:8]}: "
                f"{md(reason)})."
            )
            if st.button("Build it again", key=f"demo_build.{name}"):
                resources.demo_model_job(name, again=True)
                st.rerun()
            return
    except (JobLimitError, QueueUnavailable) as exc:
        st.error(f"The demo black box of {md(name)} cannot be built now: {md(exc)}")
        return
    _build_progress(run.id, name)


@st.fragment(run_every=1.0)
def _build_progress(run_id: str, name: str) -> None:
    from app import resources

    run = resources.gate().run(run_id)
    if run.finished:
        st.rerun()  # the whole page, now with the model (or the build's failure)
    p = run.progress
    text = f"Building the demo black box of {md(name)} (a 200-tree random forest, once)"
    text += f": {md(p.stage or run.status)}"
    if p.message:
        text += f", {md(p.message)}"
    st.progress(min(max(p.fraction, 0.0), 1.0), text=text)
    if run.status == "queued":
        st.caption("Waiting for a worker (`flipscope run` starts one beside the dashboard).")


def point_table(explanation: Any, i: int) -> Any:
    """One instance: its features, the counterfactual and the change, in original units when known."""
    import numpy as np
    import pandas as pd

    row = explanation.subset([i])
    names = explanation.schema.original_names if explanation.schema else explanation.feature_names
    if explanation.schema is not None:
        before = explanation.schema.decode(row.inputs).iloc[0]
        after = (
            explanation.schema.decode(row.counterfactuals).iloc[0]
            if row.counterfactuals is not None
            else None
        )
    else:
        before = pd.Series(row.inputs[0], index=names)
        after = (
            pd.Series(row.counterfactuals[0], index=names)
            if row.counterfactuals is not None
            else None
        )
    table = pd.DataFrame({"feature": names, "value": [str(_short(v)) for v in before.to_numpy()]})
    if after is not None:
        table["counterfactual"] = [str(_short(v)) for v in after.to_numpy()]
        table["changed"] = [
            b != a for b, a in zip(table["value"], table["counterfactual"], strict=True)
        ]
    cls = explanation.class_names
    extra = {
        "black box's class": cls[int(row.predictions[0])],
        "target class": cls[int(row.targets[0])],
    }
    if row.counterfactual_predictions is not None:
        extra["black box's class after"] = cls[int(row.counterfactual_predictions[0])]
    for key in ("perturbation_norm", "norm_percentile"):
        if key in explanation.diagnostics:
            extra[key.replace("_", " ")] = (
                f"{float(np.asarray(explanation.diagnostics[key])[i]):.3g}"
            )
    facts = pd.DataFrame({"feature": list(extra), "value": list(extra.values())})
    return pd.concat([facts, table], ignore_index=True)


def _short(v: Any) -> Any:
    return f"{v:.3g}" if isinstance(v, float) else v
