"""Reusable widgets: a form built from a Params dataclass, run progress, run pickers.

Widgets and layout only; no computation. Forms come from ``explainers.base.param_specs``, so a
new method's parameters appear here with their defaults, bounds and help without UI code.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import streamlit as st

from app.text import md
from explainers.base import ParamSpec, param_specs


def _tooltip(spec: ParamSpec) -> str:
    """The help line, and the paper's symbol and the parameter's name, so a reader of the paper
    (or of a run's parameters) finds it."""
    cite = f"Paper: {spec.symbol}; parameter `{spec.name}`." if spec.symbol else ""
    return f"{spec.help[:1].upper()}{spec.help[1:]}. {cite or f'Parameter `{spec.name}`.'}"


def _default_class(spec: ParamSpec) -> str:
    """What ``-1`` means for a class parameter, as its help line declares ("-1: ...")."""
    meaning = spec.help.split("-1:", 1)[1].strip() if "-1:" in spec.help else "the method's choice"
    return f"Default: {meaning}"


def _widget(
    spec: ParamSpec, key: str, classes: list[str] | None, features: list[str] | None
) -> Any:
    label, tip = spec.title, _tooltip(spec)
    if spec.role == "class" and classes:
        options = ([-1] if spec.lo is not None and spec.lo < 0 else []) + list(range(len(classes)))
        return st.selectbox(
            label, options, index=options.index(spec.default) if spec.default in options else 0,
            format_func=lambda c: _default_class(spec) if c < 0 else classes[c],
            help=tip, key=key,
        )  # fmt: skip
    if spec.role == "features" and features is not None:
        chosen = st.multiselect(
            label, features, default=[f for f in spec.default if f in features],
            placeholder="none: every feature may change", help=tip, key=key,
        )  # fmt: skip
        return tuple(chosen)
    if spec.choices is not None:
        options = list(spec.choices)
        return st.selectbox(label, options, index=options.index(spec.default), help=tip, key=key)
    if spec.type is bool:
        return st.checkbox(label, value=bool(spec.default), help=tip, key=key)
    if spec.type is int:
        return st.number_input(
            label,
            value=int(spec.default),
            min_value=None if spec.lo is None else int(spec.lo),
            max_value=None if spec.hi is None else int(spec.hi),
            step=1,
            help=tip,
            key=key,
        )
    if spec.type is float:
        return st.number_input(
            label,
            value=float(spec.default),
            min_value=None if spec.lo is None else float(spec.lo),
            max_value=None if spec.hi is None else float(spec.hi),
            format="%g",
            help=tip,
            key=key,
        )
    if spec.type is tuple:
        text = st.text_input(
            label, value=", ".join(map(str, spec.default)), help=f"{tip} Comma-separated.", key=key
        )
        return tuple(v.strip() for v in text.split(",") if v.strip())
    return st.text_input(
        label, value="" if spec.default is None else str(spec.default), help=tip, key=key
    )


def params_form(
    params_cls: type,
    key: str,
    overrides: dict[str, Any] | None = None,
    *,
    classes: list[str] | None = None,
    features: list[str] | None = None,
) -> dict[str, Any]:
    """Widgets for every declared parameter; returns changed values only.

    What picks from the data set (``ParamSpec.role``: a class from ``classes``, columns from
    ``features``) comes first and stays in view; the method's other parameters are folded into
    "Parameters" (the defaults are a good start) and the advanced ones into "Advanced", so the
    quick start is the method, the rows and Start."""
    specs = [s for s in param_specs(params_cls) if s.name not in (overrides or {})]
    values: dict[str, Any] = {}
    groups = (
        (None, [s for s in specs if s.role]),
        ("Parameters (the defaults are a good start)", [s for s in specs if not s.role and not s.advanced]),
        ("Advanced", [s for s in specs if not s.role and s.advanced]),
    )  # fmt: skip
    for title, group in groups:
        if not group:
            continue
        with st.expander(title) if title else contextlib.nullcontext():
            cols = st.columns(3 if title else 2)
            for i, spec in enumerate(group):
                with cols[i % len(cols)]:
                    values[spec.name] = _widget(spec, f"{key}.{spec.name}", classes, features)
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
    """How a page names a run's data set: the built-in name, or the upload's display name."""
    return dataset_name(run.dataset)


def dataset_name(spec: Any) -> str:
    """A data set spec (``{"name": ...}``, ``{"upload": id}``) by name. For the data set of a
    run the caller may view, or of this session's selection: the name of an upload this user
    may not open otherwise reaches them only through a run they may view."""
    from app import resources

    spec = spec.to_json() if hasattr(spec, "to_json") else dict(spec or {})
    if spec.get("name"):
        return str(spec["name"])
    return resources.upload_name(str(spec.get("upload", "")))


def model_name(spec: Any) -> str:
    """A model spec by name: "demo black box", an upload's display name, or "the model of run
    ID" (a surrogate a run trained); "no model" for None."""
    from app import resources

    spec = spec.to_json() if hasattr(spec, "to_json") else dict(spec or {})
    if not spec:
        return "no model"
    if "demo" in spec:
        return "demo black box"
    if "upload" in spec:
        return resources.upload_name(str(spec["upload"]))
    ref = next(iter(spec.values()))
    return f"the model of run {str(ref)[:8]}"


def selection_names() -> tuple[str, str]:
    """This session's data set and model by name. An upload is named only for a user who may
    open it (an id typed into the URL must not reveal another user's file name)."""
    from app import resources, state
    from app.access import NotYours

    sel = state.selection()
    if sel.dataset.upload is not None:
        try:
            resources.gate().upload(sel.dataset.upload)
        except NotYours:
            return f"upload {sel.dataset.upload[:6]}", "unknown"
    return dataset_name(sel.dataset), model_name(sel.model)


def sidebar_state(run: Any, *, upload_pending: bool = False) -> None:
    """The sidebar's lines: what the pages show (the run on view, its data set and model), or,
    without a run, the data set and model this session works on. ``upload_pending``: the page
    asks for an upload and shows no data set yet (``state.upload_pending``), so none is named."""
    from app.jobs.kinds import title

    if run is not None:
        data, model = data_label(run), model_name(run.model)
        st.markdown(f"**Run on view:** {md(title(run.kind))} · `{run.id[:8]}`")
    elif upload_pending:
        data, model = "none chosen yet (upload pending)", "none yet"
    else:
        data, model = selection_names()
    st.markdown(f"**Data:** {md(data)}  \n**Model:** {md(model)}")


def run_label(run: Any) -> str:
    from app.jobs.kinds import title

    data = data_label(run)
    if run.model and "upload" in run.model:
        data += f" ({model_name(run.model)})"
    # A fixed time, not "5 s ago": widget options must not change between reruns.
    when = time.strftime("%d %b %H:%M", time.localtime(run.finished_at or run.created_at))
    return f"{title(run.kind)} on {data} · {run.id[:8]} · {when}"


SHARE_LABEL = "Link to this view"


def share_link(page: str, params: dict[str, Any]) -> None:
    """A copyable link that opens this page with these query parameters in any browser, behind a
    button (``SHARE_LABEL``): a code block is drawn by a 1.6 MB syntax highlighter that the browser
    would otherwise fetch and compile while it draws the page's chart; in a popover it is
    fetched when the viewer opens it. With
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
    with st.popover(SHARE_LABEL, icon=":material/link:"):
        st.code(f"{root}/{page}?{query}", language=None)


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def refuse_foreign_run() -> Any:
    """The run this session looks at (the URL's on a fresh session), or None. A run this user
    may not view, or one that does not exist, is refused plainly, with the same words for both,
    and forgotten: no page silently shows another run in its place."""
    from app import resources, state
    from app.access import NotYours

    wanted = state.run_id()
    if not wanted:
        return None
    try:
        return resources.gate().run(wanted)
    except NotYours as exc:
        st.error(
            f"The run in this address cannot be opened: {exc}. Ask whoever sent the link "
            "for a new one (a share link carries share=...), or pick one of your runs."
        )
        state.drop_run(refused=True)
        return None


def run_on_view() -> Any:
    """The run this session looks at (``refuse_foreign_run``); the session then works on the
    run's data set and model (``app.state.follow_run``), so the sidebar, Data & model and
    Explain show what the run shows. Safe to call more than once per script run."""
    from app import state

    run = refuse_foreign_run()
    if run is not None:
        state.set_run(run.id, state.Selection.of_run(run))
    return run


def finished_runs(page: str, keep: Any = None) -> list[Any]:
    """Succeeded runs that the view ``page`` shows (``app.catalog``: by what their Explanation
    holds and its modality), that this user may view and ``keep(run)`` accepts, newest first:
    their own, those without owner (demos) and those whose share link this session was opened
    with (all of them without sign-in). A run in the URL that this user may not view is refused
    first (``run_on_view``)."""
    from app import catalog, resources
    from app.jobs import SUCCEEDED

    run_on_view()
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
    """The newest run of each method in ``runs`` (newest first; for the run on view's method,
    that run), a multiselect of those methods (all chosen by default), and ``{method title:
    (run, Explanation)}`` for the chosen ones, in order, the run on view's first;
    ``st.stop()`` when none is chosen."""
    from app import state
    from app.jobs.kinds import title

    wanted = state.run_id()
    newest: dict[str, Any] = {r.kind: r for r in runs if r.id == wanted}
    for r in runs:
        newest.setdefault(r.kind, r)
    chosen = st.multiselect(
        "Methods", list(newest), default=list(newest), format_func=title, key=key
    )
    if not chosen:
        st.stop()
    return {title(m): (newest[m], open_explanation(newest[m])) for m in chosen}


def side_by_side(runs: list[Any], key: str, page: str) -> tuple[dict[str, tuple[Any, Any]], int]:
    """One data set's runs side by side: a data set picker (the run on view's preselected; when
    this page cannot show that run, the reason and no preselection, then ``st.stop()`` until the
    user picks), the newest run of each method (``newest_per_method``), and how many leading rows
    they all explain; an error and ``st.stop()`` when they explain different rows."""
    from app import analysis, state

    specs: dict[str, Any] = {}
    for r in runs:
        specs.setdefault(json.dumps(r.dataset, sort_keys=True), r.dataset)
    keys = list(specs)
    wanted_id = state.run_id()
    wanted = next((r for r in runs if r.id == wanted_id), None)
    index: int | None = 0
    if wanted is not None:
        index = keys.index(json.dumps(wanted.dataset, sort_keys=True))
    elif wanted_id and (on_view := refuse_foreign_run()) is not None:
        _cannot_show(page, on_view, "a data set below")
        index = None
    elif not wanted_id and state.refused_run():
        index = None  # the address named a run that cannot be opened (said above): none instead
    picked_key = st.selectbox(
        "Data set",
        keys,
        index=index,
        format_func=lambda k: dataset_name(specs[k]),
        placeholder="Choose a data set",
        key=f"{key}_data",
    )
    if picked_key is None:
        st.stop()
    on_data = [r for r in runs if json.dumps(r.dataset, sort_keys=True) == picked_key]
    picked = newest_per_method(on_data, f"{key}_methods")
    shared = analysis.shared_rows({m: e for m, (_, e) in picked.items()})
    if shared is None:
        st.error(
            f"{md(', '.join(picked))} do not explain the same rows; pick runs made on the same "
            "test rows."
        )
        st.stop()
    first = next(iter(picked.values()))[0]
    if wanted_id not in {r.id for r, _ in picked.values()}:
        state.set_run(first.id, state.Selection.of_run(first))  # what this page now shows
    return picked, shared


def _cannot_show(page: str, run: Any, instead: str) -> None:
    """Say that ``page`` cannot show the run on view, and why, in place of showing another."""
    from app import catalog, resources

    view = catalog.view(page)
    if run.has_explanation:
        why = view.why_not(resources.run_holding(run)) or "it has no results this page draws"
    else:
        why = f"it has no results ({run.status})"
    st.warning(
        f"The run on view, {md(run_label(run))}, cannot be shown on {view.title}: {md(why)}. "
        f"Pick {instead}, or go back to a page that shows it."
    )


def counterfactual_version(explanations: dict[str, Any], key: str) -> dict[str, Any]:
    """A toggle between the verified counterfactuals (the default) and the methods' raw one-pass
    output, shown only when one of ``explanations`` keeps raw ones; the explanations to draw
    (a result without raw counterfactuals is drawn as stored either way)."""
    from app import analysis

    if not any(e.raw_counterfactuals is not None for e in explanations.values()):
        return explanations
    raw = st.toggle(
        "Show the raw counterfactual (the method's one pass, before the black box checked it)",
        value=False,
        key=key,
        help="The verified counterfactual is the one the black box confirmed, shrunk and with "
        "unneeded changes reverted; the raw one is what the EMAP paper's figures describe.",
    )
    if not raw:
        return explanations
    return {
        m: analysis.counterfactual_version(e, analysis.RAW)
        if e.raw_counterfactuals is not None
        else e
        for m, e in explanations.items()
    }


def verification_status(explanation: Any, index: int, label: str = "") -> None:
    """Say plainly how row ``index``'s verified counterfactual was obtained (as is, repaired, made
    from a training image, or failed: an error box); nothing for a method that does not
    verify."""
    from app import analysis

    found = analysis.verification_status(explanation, index)
    if found is None:
        return
    status, sentence = found
    text = f"{md(label)}: {sentence}" if label else sentence
    if status == "failed":
        st.error(text, icon="⚠️")
    elif status in ("repaired", "from a training image"):  # not the method's own as it was
        st.info(text)
    else:
        st.success(text)


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


def run_picker(runs: list[Any], key: str, label: str = "Run", page: str | None = None) -> Any:
    """Pick one of ``runs``; the run on view is preselected, and choosing one puts it on view.
    With ``page``, a run on view that this page cannot show is named with the reason, and
    nothing is preselected: the page never opens on another run in its place (None until the
    user picks one)."""
    from app import state

    ids = [r.id for r in runs]
    wanted = state.run_id()
    index: int | None = ids.index(wanted) if wanted in ids else 0
    if page is not None and wanted and wanted not in ids:
        on_view = refuse_foreign_run()
        if on_view is not None:
            _cannot_show(page, on_view, "one of the runs below")
            index = None
    if page is not None and not wanted and state.refused_run():
        index = None  # the address named a run that cannot be opened (said above): none instead
    if not runs:
        return None
    chosen = st.selectbox(
        label,
        ids,
        index=index,
        format_func=lambda i: run_label(runs[ids.index(i)]),
        placeholder="Choose a run",
        key=key,
    )
    if chosen is None:
        return None
    run = runs[ids.index(chosen)]
    if label == "Run" and state.run_id() != chosen:
        state.set_run(
            chosen, state.Selection.of_run(run)
        )  # the URL names it: a copied link opens it
    return run


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
    if "perturbation_norm" in explanation.diagnostics:
        extra["perturbation size"] = (
            f"{float(np.asarray(explanation.diagnostics['perturbation_norm'])[i]):.3g}"
        )
    if "norm_percentile" in explanation.diagnostics:
        extra[PERCENTILE] = percentile_text(
            np.asarray(explanation.diagnostics["norm_percentile"])[i]
        )
    facts = pd.DataFrame({"feature": list(extra), "value": list(extra.values())})
    return pd.concat([facts, table], ignore_index=True)


def _short(v: Any) -> Any:
    if v is None or (isinstance(v, float) and v != v):
        return MISSING
    return f"{v:.3g}" if isinstance(v, float) else v


def stored_quality(run: Any) -> dict[str, Any] | None:
    """The run's stored quality card (None for a run saved without one); a card that cannot be
    read becomes ``{"error": why}``, named inside the run, never by a server path."""
    from app import resources
    from app.jobs import RunStateError

    try:
        return resources.run_quality(run)
    except (RunStateError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return {"error": f"the quality card of run {run.id[:8]} cannot be read: {reason}"}


def quality_panel(run: Any) -> None:
    """The run's "Quality" panel: the figures of the card its job stored (``app.jobs.quality``),
    each with its baseline (a random attribution, the nearest real example, the confidence
    margin) beside it, a "how to read it" tooltip, and the sanity flags under the figure they
    concern. Reads the card only; a run without one says so."""
    from app.plots.quality import GENERAL, baseline_text, flags_by_metric, fmt, how_to_read

    st.subheader("Quality", help="Figures computed by the job on this run, on its own black box.")
    card = stored_quality(run)
    if card is None:
        st.info(
            "This run was saved without a quality card (it was made before cards were "
            "computed). Run the method again on the Explain page to get one."
        )
        return
    if card.get("error"):
        st.warning(md(card["error"]))
        return
    flags = flags_by_metric(card)
    for message in flags.get(GENERAL, []):
        st.warning(md(message))
    rows, total = card.get("rows"), card.get("rows_total")
    scored = f"{fmt(rows)} of {fmt(total)} rows" if rows != total else f"{fmt(rows)} rows"
    st.caption(
        f"Scored on {scored} in {fmt(card.get('seconds'))} s "
        f"({fmt(100 * (card.get('budget_share') or 0))}% of the job's time). Each figure has its "
        "baseline beside it: a method earns trust by beating it."
    )
    metrics = card.get("metrics") or {}
    cols = st.columns(4)
    for i, (name, metric) in enumerate(metrics.items()):
        with cols[i % 4]:
            st.metric(name, fmt(metric.get("value")), help=md(how_to_read(name, metric)))
            base = baseline_text(metric)
            if base:
                st.caption(md(base))
            for message in flags.get(name, []):
                st.warning(md(message), icon="⚠️")


def quality_table(runs: dict[str, Any]) -> None:
    """The stored quality cards of ``{method title: run}`` side by side: methods as columns,
    metrics as rows, the best in bold, the baseline as a column, with a "how to read it" column;
    then each run's sanity flags. Reads the cards only."""
    from app.plots.quality import compare_markdown

    st.subheader(
        "Quality side by side",
        help="The figures each job computed on its own run, on the same black box; bold marks the "
        "best method (not the baseline). A figure is comparable across runs made on the same rows.",
    )
    cards = {label: stored_quality(run) for label, run in runs.items()}
    st.markdown(compare_markdown(cards))
    for label, card in cards.items():
        for flag in (card or {}).get("flags") or []:
            st.warning(f"{md(label)}, {md(flag.get('metric'))}: {md(flag.get('message'))}")


MISSING = "—"
PERCENTILE = "perturbation size percentile (0–100)"


def percentile_text(value: float) -> str:
    """A perturbation size percentile as every page shows it: on the 0-100 scale, one decimal."""
    return f"{float(value):.1f}"


def table(frame: Any, **kwargs: Any) -> Any:
    """``st.dataframe`` for a frame whose columns may mix types (a value column holding numbers
    and category names) or hold missing values: such columns are shown as text, numbers to four
    digits and a dash for a missing value. Arrow cannot convert a mixed column (Streamlit logs a
    traceback per render before it falls back), and a missing value would show as "None"."""
    shown = frame.copy()
    for name in shown.columns:
        column = shown[name]
        if column.dtype == object or column.isna().any():  # pandas 3's str columns hold NaN too
            shown[name] = [_cell(v) for v in column]
    return st.dataframe(shown, **kwargs)


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return MISSING
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
