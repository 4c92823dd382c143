"""Counterfactuals as data: one CSV line per counterfactual option of every row, original units.

Columns: ``row`` (the row of the run, 0-based, as the counterfactual table numbers it),
``option`` (1 = the counterfactual the views show, 2... = the further options of a run with
several per row), ``valid`` (the black box gives the target class and every constraint holds),
``class_before``, ``class_after`` (the black box's classes of the row and of the counterfactual),
``changed`` (the original features changed, ``;``-separated), then ``NAME`` and ``NAME__cf`` for
every original feature, and last ``reason`` (why an invalid option failed, when the run says).

Spreadsheets run a cell that starts with ``=``, ``+``, ``-`` or ``@`` (and tab or carriage return)
as a formula. Text cells that do (a category or a feature name from an upload) are written with a
leading ``'``; numbers are written as numbers, negative ones included, so they stay numeric.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd

from explainers.counterfactuals import FAILED
from explainers.explanation import Explanation

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CF_SUFFIX = "__cf"


class ExportError(ValueError):
    """The run holds nothing to export as counterfactuals; the message says why."""


def neutralise(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula gets a leading ``'``; others unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _decode(exp: Explanation, Z: np.ndarray) -> pd.DataFrame:
    if exp.schema is not None:
        return exp.schema.decode(Z)
    return pd.DataFrame(np.asarray(Z, dtype=np.float64), columns=exp.feature_names)


def _changed(exp: Explanation, X: np.ndarray, Z: np.ndarray) -> list[str]:
    """Per row, the original features ``Z`` changes (model-space difference over 1e-6)."""
    diff = np.abs(np.asarray(Z, dtype=np.float64) - np.asarray(X, dtype=np.float64)) > 1e-6
    if exp.schema is not None:
        names = exp.schema.original_names
        owner = exp.schema.column_owner()
    else:
        names, owner = list(exp.feature_names), np.arange(len(exp.feature_names))
    per = np.zeros((len(X), len(names)), dtype=bool)
    np.logical_or.at(per.T, owner, diff.T)
    return [";".join(n for n, c in zip(names, row, strict=True) if c) for row in per]


def counterfactual_frame(exp: Explanation) -> pd.DataFrame:
    """The export as a frame (not yet neutralised): one line per option of every row."""
    if exp.counterfactuals is None or exp.counterfactual_predictions is None:
        raise ExportError(
            f"this run's method ({exp.method}) gives no counterfactuals to export; export a run "
            "of a counterfactual method such as EMAP or DeDUCE"
        )
    d = exp.diagnostics
    options = [(exp.counterfactuals, exp.counterfactual_predictions, _valid_first(exp))]
    reasons = [d.get("counterfactual_reason")]
    if "option_counterfactuals" in d:
        for j in range(d["option_counterfactuals"].shape[1]):
            options.append(
                (
                    d["option_counterfactuals"][:, j],
                    d["option_predictions"][:, j],
                    d["option_status"][:, j] != FAILED,
                )
            )
            reasons.append(d["option_reasons"][:, j])
    before = _decode(exp, exp.inputs)
    names = list(before.columns)
    classes = np.asarray(exp.class_names, dtype=object)
    parts = []
    for j, ((Z, pred, valid), why) in enumerate(zip(options, reasons, strict=True)):
        after = _decode(exp, Z)
        cols: dict[str, Any] = {
            "row": np.arange(exp.n),
            "option": np.full(exp.n, j + 1),
            "valid": np.asarray(valid, dtype=bool),
            "class_before": classes[exp.predictions],
            "class_after": classes[np.asarray(pred, dtype=np.int64)],
            "changed": _changed(exp, exp.inputs, Z),
        }
        for name in names:
            cols[name] = before[name].to_numpy()
            cols[name + CF_SUFFIX] = after[name].to_numpy()
        cols["reason"] = np.asarray(why, dtype=object) if why is not None else [""] * exp.n
        parts.append(pd.DataFrame(cols))
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values(["row", "option"], kind="stable").reset_index(drop=True)


def _valid_first(exp: Explanation) -> np.ndarray:
    if exp.success is not None:
        return np.asarray(exp.success, dtype=bool)
    return np.asarray(exp.counterfactual_predictions == exp.targets, dtype=bool)


def counterfactual_csv(exp: Explanation) -> bytes:
    """The export as UTF-8 CSV bytes, formula-like text cells (and headers) neutralised."""
    frame = counterfactual_frame(exp)
    frame.columns = [neutralise(c) for c in frame.columns]
    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]) and frame[col].dtype != bool:
            frame[col] = frame[col].map(neutralise)
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    return buf.getvalue().encode("utf-8")
