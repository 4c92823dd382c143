"""Tabular counterfactuals (Adult): the EMAP paper's Table 1 for one instance, and change rates.

Everything is shown in original units through ``explanation.schema.decode``: years, hours,
category names. A feature "changed" when

* categorical: the counterfactual's category (argmax of its one-hot block) differs;
* integer continuous (age, hours): the rounded values differ (exactly what the table shows);
* other continuous: ``|x' - x| > rel_tol * std`` in original units (default 1% of a standard
  deviation), so float noise from the optimiser does not count as a change.

The same rule (``app.analysis.change_mask``, which is ``explainers.quality.changed_units``) drives
the table's highlights, the change-rate figure and the quality report's sparsity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from pandas.io.formats.style import Styler

from app.analysis import change_mask
from app.text import plot_text
from datasets.base import ContinuousFeature, FeatureSchema
from explainers.counterfactuals import FAILED
from explainers.explanation import Explanation
from explainers.quality import CHANGE_REL_TOL

HIGHLIGHT = "background-color: #ffe08a; font-weight: 600"
CLASS_ROW = "black box's class"
DEFAULT_REL_TOL = CHANGE_REL_TOL


def _schema(explanation: Explanation) -> FeatureSchema:
    """The Explanation's schema, or an identity schema (model space = original units) without one."""
    if explanation.schema is not None:
        return explanation.schema
    return FeatureSchema(tuple(ContinuousFeature(name) for name in explanation.feature_names))


def _pinned(explanation: Explanation, pinned: Sequence[str] | None) -> set[str]:
    if pinned is not None:
        return set(pinned)
    value = explanation.params.get("pinned") or ()
    return {value} if isinstance(value, str) else set(value)


def counterfactual_frame(
    explanation: Explanation,
    index: int,
    *,
    pinned: Sequence[str] | None = None,
    rel_tol: float = DEFAULT_REL_TOL,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The table for one instance and its highlight mask.

    Rows: one per original feature, then the black box's class. Columns: ``original``,
    ``counterfactual``, ``change`` (the perturbation in original units; ``"a → b"`` for a
    category) and ``pinned``. The mask (same shape, bool) is True exactly at the ``counterfactual``
    and ``change`` cells of changed features, and of the class row when the class changed.
    ``pinned`` defaults to the method's ``params["pinned"]``.
    """
    if not 0 <= index < explanation.n:
        raise IndexError(f"instance {index} is outside 0..{explanation.n - 1}")
    changed = change_mask(explanation, rel_tol=rel_tol, rows=np.array([index])).iloc[0]
    schema = _schema(explanation)
    before = schema.decode(explanation.inputs[[index]]).iloc[0]
    after = schema.decode(explanation.counterfactuals[[index]]).iloc[0]  # type: ignore[index]
    pins = _pinned(explanation, pinned)
    rows = []
    for f in schema.continuous:
        a, b = before[f.name], after[f.name]
        if f.integer:
            a, b, delta = int(a), int(b), int(b) - int(a)
        else:
            a, b = _display_round(float(a), f.std), _display_round(float(b), f.std)
            delta = _display_round(b - a, f.std)
        rows.append((f.name, a, b, delta if changed[f.name] else 0, f.name in pins))
    for f in schema.categorical:
        a, b = before[f.name], after[f.name]
        rows.append((f.name, a, b, f"{a} → {b}" if changed[f.name] else "", f.name in pins))
    names = explanation.class_names
    pred = names[explanation.predictions[index]]
    cf_pred = (
        names[explanation.counterfactual_predictions[index]]
        if explanation.counterfactual_predictions is not None
        else "?"
    )
    class_changed = cf_pred != pred
    rows.append((CLASS_ROW, pred, cf_pred, f"{pred} → {cf_pred}" if class_changed else "", False))
    frame = pd.DataFrame(
        [r[1:] for r in rows],
        index=pd.Index([r[0] for r in rows], name="feature"),
        columns=["original", "counterfactual", "change", "pinned"],
    ).astype(object)
    frame["pinned"] = ["yes" if r[4] else "" for r in rows]
    mask = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    flags = [bool(changed[f]) for f in schema.original_names] + [class_changed]
    mask.loc[flags, ["counterfactual", "change"]] = True
    return frame, mask


def _display_round(v: float, std: float) -> float:
    """Round to about three significant digits of the feature's spread (float32 noise such as
    499.99998 shows as 500); ``+ 0.0`` turns -0.0 into 0.0."""
    decimals = int(np.clip(2 - np.floor(np.log10(std)) if std > 0 else 2, 0, 6))
    return round(v, decimals) + 0.0


def _fmt(v: object) -> str:
    if isinstance(v, bool | np.bool_):
        return str(v)
    if isinstance(v, int | np.integer):
        return f"{int(v)}"
    if isinstance(v, float | np.floating):
        return f"{float(v):.4g}"
    return str(v)


def _fmt_delta(v: object) -> str:
    """Signed perturbation; an unchanged feature shows as 0."""
    if isinstance(v, bool | np.bool_):
        return str(v)
    if isinstance(v, int | np.integer):
        return f"{int(v):+d}" if v else "0"
    if isinstance(v, float | np.floating):
        return f"{float(v):+.4g}" if v else "0"
    return str(v)


# How a verified counterfactual was obtained, in a caption (explainers.counterfactuals.STATUS_NAMES).
VERIFICATION_VERDICT = {
    "as is": " (verified on the black box)",
    "repaired": " (repaired: the method's own counterfactual did not flip the black box)",
    "failed": " (verification FAILED: shown is the method's own proposal)",
    "from a training image": " (made from one of the nearest training images of the target class, "
    "not by the method; verified on the black box)",
}


def counterfactual_table(
    explanation: Explanation,
    index: int,
    *,
    pinned: Sequence[str] | None = None,
    rel_tol: float = DEFAULT_REL_TOL,
    name: str | None = None,
) -> Styler:
    """The paper's Table 1 for one instance as a Styler: changed cells highlighted.

    The caption names the instance (``name``, default "Instance <index>"), the target, whether
    the black box's class flipped, and for verified counterfactuals how this one was obtained
    (``VERIFICATION_VERDICT``).
    """
    frame, mask = counterfactual_frame(explanation, index, pinned=pinned, rel_tol=rel_tol)
    names = explanation.class_names
    target = names[explanation.targets[index]]
    if explanation.success is None:
        verdict = ""
    else:
        verdict = "; reached" if explanation.success[index] else "; NOT reached"
    status = explanation.status_names()
    if status is not None:
        verdict += VERIFICATION_VERDICT[status[index]]
    n_changed = int(mask["change"].iloc[:-1].sum())
    caption = (
        f"{name or f'Instance {index}'}: target class {target}{verdict}. {n_changed} feature(s) changed "
        "(highlighted); values in original units."
    )
    css = mask.replace({True: HIGHLIGHT, False: ""}).astype(str)
    # Text cells: a column holds numbers and category names, which Arrow cannot convert as one
    # type (Streamlit would log a traceback on every render before falling back).
    shown = frame.copy()
    for column in shown.columns:
        shown[column] = [(_fmt_delta if column == "change" else _fmt)(v) for v in frame[column]]
    return shown.style.apply(lambda _: css, axis=None).set_caption(caption)


def change_frequency_figure(
    explanation: Explanation,
    *,
    only_successful: bool = True,
    rel_tol: float = DEFAULT_REL_TOL,
    pinned: Sequence[str] | None = None,
) -> go.Figure:
    """How often each original feature changes over the explained instances (share, sorted).

    ``only_successful`` counts only counterfactuals that reached their target (when the
    Explanation records success).
    """
    mask = change_mask(explanation, rel_tol=rel_tol)
    scope = "counterfactuals"
    if only_successful and explanation.success is not None:
        mask = mask[np.asarray(explanation.success, dtype=bool)]
        scope = "successful counterfactuals"
    n = len(mask)
    counts = mask.sum(axis=0).astype(int)
    share = counts / n if n else counts * 0.0
    order = share.sort_values(ascending=True, kind="stable").index  # largest at the top
    pins = _pinned(explanation, pinned)
    labels = [plot_text(f) + (" (pinned)" if f in pins else "") for f in order]
    fig = go.Figure(
        go.Bar(
            x=share[order].to_numpy(),
            y=labels,
            orientation="h",
            marker_color="#4c72b0",
            customdata=counts[order].to_numpy(),
            text=[f"{v:.0%}" for v in share[order]],
            textposition="auto",
            hovertemplate="%{y}: changed in %{customdata:,} rows (%{x:.1%})<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"How often each feature changes ({n:,} {scope})",
        xaxis={
            "title": "share of rows where the feature changes",
            "range": [0, 1],
            "tickformat": ".0%",
        },
        height=max(280, 24 * len(order) + 100),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


def options_table(explanation: Explanation, index: int) -> Styler | None:
    """The counterfactual options of one row side by side (a run with several per row; None
    otherwise): the row's values, then one column per option in original units, with the black
    box's class, whether the option is valid and, when not, why. Changed cells of valid options
    are highlighted."""
    d = explanation.diagnostics
    cf, pred = explanation.counterfactuals, explanation.counterfactual_predictions
    if "option_counterfactuals" not in d or cf is None or pred is None:
        return None
    if not 0 <= index < explanation.n:
        raise IndexError(f"instance {index} is outside 0..{explanation.n - 1}")
    schema = _schema(explanation)
    k = 1 + d["option_counterfactuals"].shape[1]
    Zs = [cf[index]] + [d["option_counterfactuals"][index, j] for j in range(k - 1)]
    preds = [int(pred[index])] + [int(p) for p in d["option_predictions"][index]]
    first_ok = bool(explanation.success[index]) if explanation.success is not None else True
    valid = [first_ok] + [bool(s != FAILED) for s in d["option_status"][index]]
    first_why = str(d["counterfactual_reason"][index]) if "counterfactual_reason" in d else ""
    reasons = [first_why] + [str(r) for r in d["option_reasons"][index]]
    names = explanation.class_names
    x = explanation.inputs[index]
    before = schema.decode(x[None]).iloc[0]
    owner = schema.column_owner()
    labels = [*schema.original_names, CLASS_ROW, "valid", "why not"]
    cols: dict[str, list[object]] = {
        "original": [*before.tolist(), names[explanation.predictions[index]], "", ""]
    }
    mask = pd.DataFrame(False, index=pd.Index(labels, name="feature"), columns=["original"])
    for j, (Z, p, ok, why) in enumerate(zip(Zs, preds, valid, reasons, strict=True)):
        after = schema.decode(np.asarray(Z)[None]).iloc[0]
        col = f"option {j + 1}"
        cols[col] = [*after.tolist(), names[p], "yes" if ok else "no", "" if ok else why]
        moved = np.zeros(len(schema.original_names), dtype=bool)
        np.logical_or.at(moved, owner, np.abs(np.asarray(Z, np.float64) - x) > 1e-6)
        mask[col] = [*(moved & ok), False, False, False]
    # Text cells, as in counterfactual_table: a column mixes numbers and category names.
    frame = pd.DataFrame({c: [_fmt(v) for v in vs] for c, vs in cols.items()}, index=mask.index)
    css = mask.replace({True: HIGHLIGHT, False: ""}).astype(str)
    return frame.style.apply(lambda _: css, axis=None).set_caption(
        f"Instance {index}: {sum(valid)} of {k} options valid; changed cells of valid "
        "options highlighted; values in original units."
    )
