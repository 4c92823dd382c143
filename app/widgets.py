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


def run_label(run: Any, titles: dict[str, str]) -> str:
    data = run.dataset.get("name") or "upload"
    # A fixed time, not "5 s ago": widget options must not change between reruns.
    when = time.strftime("%d %b %H:%M", time.localtime(run.finished_at or run.created_at))
    return f"{titles.get(run.kind, run.kind)} on {data} · {run.id[:8]} · {when}"


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


def finished_runs(keep: Any) -> list[Any]:
    """Succeeded runs with an explanation that this user may view and ``keep(run)`` accepts,
    newest first: their own, those without owner (demos) and those whose share link this session
    was opened with (all of them without sign-in). A run in the URL that this user may not view
    is refused first (``refuse_foreign_run``)."""
    from app import resources
    from app.jobs import SUCCEEDED

    refuse_foreign_run()
    runs = resources.gate().runs(status=SUCCEEDED)
    return [r for r in runs if r.has_explanation and keep(r)]


def open_explanation(run: Any, store: Any, stop: bool = True) -> Any:
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


def newest_per_method(runs: list[Any], store: Any, key: str) -> dict[str, tuple[Any, Any]]:
    """The newest run of each method in ``runs`` (newest first), a multiselect of those methods
    (all chosen by default), and ``{METHOD: (run, Explanation)}`` for the chosen ones, in order;
    ``st.stop()`` when none is chosen."""
    newest: dict[str, Any] = {}
    for r in runs:
        newest.setdefault(r.kind, r)
    chosen = st.multiselect(
        "Methods", list(newest), default=list(newest), format_func=str.upper, key=key
    )
    if not chosen:
        st.stop()
    return {m.upper(): (newest[m], open_explanation(newest[m], store)) for m in chosen}


def run_picker(runs: list[Any], key: str, label: str = "Run") -> Any:
    """Pick one of ``runs``; the URL's run is preselected, and choosing one puts it in the URL."""
    from app import state
    from app.jobs.tasks import KINDS

    if not runs:
        return None
    titles = {k: v.title for k, v in KINDS.items()}
    ids = [r.id for r in runs]
    wanted = state.run_id()
    index = ids.index(wanted) if wanted in ids else 0
    chosen = st.selectbox(
        label,
        ids,
        index=index,
        format_func=lambda i: run_label(runs[ids.index(i)], titles),
        key=key,
    )
    if label == "Run" and st.query_params.get("run") != chosen:
        state.set_run(chosen)  # the URL names the run on view, so a copied link opens it
    return runs[ids.index(chosen)]


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
