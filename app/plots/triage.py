"""Uncertainty triage: do the smallest perturbations flag the black box's own mistakes?

EMAP's premise is that a point which needs only a small change to flip lies close to the decision
boundary, where the black box is least sure. These builders rank instances by perturbation size
(smaller = more suspicious; for images optionally by a DDU density, lower = more suspicious) and
measure how well "the smallest k%" picks out the instances the black box gets wrong on the test
split: precision, recall and AUROC, with a precision/recall-versus-k figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from numpy.typing import NDArray

from explainers.explanation import Explanation

# Diagnostics that rank instances, most useful first; "lower = more suspicious" for all of them.
RANKING_KEYS = ("perturbation_norm", "density", "ddu_density", "log_density")


def smallest_k_mask(scores: NDArray, k_pct: float) -> NDArray[np.bool_]:
    """Boolean mask of exactly ``ceil(k_pct / 100 * n)`` instances with the smallest ``scores``.

    Ties are broken by position (a stable sort), so the count is exact even when many scores are
    equal (several zero perturbations, say). ``k_pct`` is clipped to [0, 100]; NaN scores count as
    largest (never flagged before a finite score).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    n = len(s)
    k = float(np.clip(k_pct, 0.0, 100.0))
    # The 1e-9 keeps 10% of 100 at 10 (float error would otherwise make it 11).
    m = min(n, int(np.ceil(k / 100.0 * n - 1e-9))) if n else 0
    order = np.argsort(np.where(np.isnan(s), np.inf, s), kind="stable")
    mask = np.zeros(n, dtype=bool)
    mask[order[:m]] = True
    return mask


def triage_scores(norms: NDArray, is_error: NDArray, k_pct: float) -> dict[str, float]:
    """How well the smallest ``k_pct`` % of ``norms`` flags the errors in ``is_error``.

    Parameters
    ----------
    norms : (n,) perturbation sizes (or any score where smaller means more suspicious).
    is_error : (n,) bool, whether the black box got each instance wrong.
    k_pct : share of instances flagged, in percent.

    Returns
    -------
    dict with ``precision`` (errors among the flagged / flagged), ``recall`` (flagged errors / all
    errors), ``auroc`` (rank-based, the chance that a random error has a smaller norm than a random
    correct instance; ties count one half; NaN when only one kind is present), ``base_rate`` (the
    error rate: the precision of flagging at random), ``flagged``, ``errors`` and ``n``.
    Precision is NaN when nothing is flagged, recall when there are no errors.
    """
    s = np.asarray(norms, dtype=np.float64).ravel()
    err = np.asarray(is_error, dtype=bool).ravel()
    if s.shape != err.shape:
        raise ValueError(f"norms has {s.shape[0]} entries but is_error has {err.shape[0]}")
    flagged = smallest_k_mask(s, k_pct)
    hits = int((flagged & err).sum())
    n_flagged, n_err = int(flagged.sum()), int(err.sum())
    return {
        "precision": hits / n_flagged if n_flagged else float("nan"),
        "recall": hits / n_err if n_err else float("nan"),
        "auroc": _auroc(-s, err),
        "base_rate": n_err / len(s) if len(s) else float("nan"),
        "flagged": float(n_flagged),
        "errors": float(n_err),
        "n": float(len(s)),
    }


def _auroc(score: NDArray, positive: NDArray[np.bool_]) -> float:
    """AUROC of ``score`` (higher = more likely positive); NaN if only one class is present."""
    if positive.all() or not positive.any():
        return float("nan")
    from sklearn.metrics import roc_auc_score

    finite = np.where(np.isnan(score), -np.inf, score)
    return float(roc_auc_score(positive, finite))


def triage_curve(
    norms: NDArray, is_error: NDArray, ks: Sequence[float] | NDArray | None = None
) -> pd.DataFrame:
    """Precision and recall of the smallest-k% rule for every k in ``ks`` (default 1..100)."""
    ks = np.arange(1, 101) if ks is None else np.asarray(ks, dtype=np.float64)
    s = np.asarray(norms, dtype=np.float64).ravel()
    err = np.asarray(is_error, dtype=bool).ravel()
    if s.shape != err.shape:
        raise ValueError(f"norms has {s.shape[0]} entries but is_error has {err.shape[0]}")
    n, n_err = len(s), int(err.sum())
    # One sort serves every k: the flagged set for k is a prefix of the stable order.
    order = np.argsort(np.where(np.isnan(s), np.inf, s), kind="stable")
    cum_hits = np.concatenate([[0], np.cumsum(err[order])])
    m = np.minimum(n, np.ceil(np.clip(ks, 0, 100) / 100.0 * n - 1e-9)).astype(np.int64)
    hits = cum_hits[m]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(m > 0, hits / np.maximum(m, 1), np.nan)
        recall = hits / n_err if n_err else np.full(len(m), np.nan)
    return pd.DataFrame({"k_pct": ks, "flagged": m, "precision": precision, "recall": recall})


def triage_figure(
    norms: NDArray,
    is_error: NDArray,
    *,
    k_pct: float | None = 10.0,
    ks: Sequence[float] | NDArray | None = None,
    score_name: str = "perturbation norm",
) -> go.Figure:
    """Precision and recall of "flag the smallest k%" against k, with the random-flagging baseline.

    The dotted grey line is the error rate: what flagging at random would reach as precision.
    A vertical line marks the current ``k_pct``; the title gives the AUROC.
    """
    curve = triage_curve(norms, is_error, ks)
    err = np.asarray(is_error, dtype=bool)
    base = float(err.mean()) if len(err) else float("nan")
    auroc = _auroc(-np.asarray(norms, dtype=np.float64).ravel(), err.ravel())
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=curve["k_pct"],
            y=curve["precision"],
            name="precision (errors among flagged)",
            mode="lines",
            line={"color": "#d62728", "width": 2},
            hovertemplate="k = %{x:.0f}%<br>precision %{y:.1%}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=curve["k_pct"],
            y=curve["recall"],
            name="recall (errors caught)",
            mode="lines",
            line={"color": "#1f77b4", "width": 2},
            hovertemplate="k = %{x:.0f}%<br>recall %{y:.1%}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[curve["k_pct"].min(), curve["k_pct"].max()],
            y=[base, base],
            mode="lines",
            name=f"error rate {base:.1%} (precision of random flagging)",
            line={"color": "#7f7f7f", "dash": "dot"},
            hoverinfo="skip",
        )
    )
    if k_pct is not None:
        fig.add_vline(x=k_pct, line={"color": "#444", "dash": "dash", "width": 1})
    auroc_txt = (
        "n/a (needs both errors and correct predictions)" if np.isnan(auroc) else f"{auroc:.3f}"
    )
    fig.update_layout(
        title=f"Flagging the smallest k% by {score_name}: AUROC {auroc_txt}",
        xaxis_title=f"k: share of instances flagged (smallest {score_name} first), %",
        yaxis={"title": "share", "range": [0, 1.02], "tickformat": ".0%"},
        legend={"orientation": "h", "y": -0.22},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        height=380,
    )
    return fig


def errors_of(explanation: Explanation, y_true: NDArray) -> NDArray[np.bool_]:
    """Whether the black box's class (``explanation.predictions``) differs from ``y_true``."""
    y = np.asarray(y_true).ravel()
    if len(y) != explanation.n:
        raise ValueError(
            f"{len(y)} true labels for {explanation.n} explained instances; pass the labels of the "
            "rows that were explained (the test split, in the same order)"
        )
    return explanation.predictions != y


def ranking_keys(explanation: Explanation) -> list[str]:
    """The per-instance scores this Explanation offers for ranking (perturbation norm, density)."""
    keys = [k for k in RANKING_KEYS if k in explanation.diagnostics]
    if "perturbation_norm" not in keys and (
        explanation.counterfactuals is not None or explanation.attributions is not None
    ):
        keys.insert(0, "perturbation_norm")
    return keys


def ranking_score(explanation: Explanation, key: str = "perturbation_norm") -> NDArray[np.float64]:
    """Per-instance score for ``key``; the norm falls back to ||x' - x||, then to ||attribution||."""
    if key in explanation.diagnostics:
        return np.asarray(explanation.diagnostics[key], dtype=np.float64).reshape(explanation.n)
    if key == "perturbation_norm":
        v = explanation.perturbations
        if v is None:
            v = explanation.attributions
        if v is not None:
            return np.linalg.norm(np.asarray(v, dtype=np.float64), axis=1)
    raise KeyError(
        f"this explanation has no {key!r}; it offers {ranking_keys(explanation) or 'no ranking score'}"
    )


def ranking_frame(
    explanation: Explanation,
    *,
    y_true: NDArray | None = None,
    rank_by: str = "perturbation_norm",
    top: int | None = None,
) -> pd.DataFrame:
    """Instances ordered from most to least suspicious (smallest ``rank_by`` first).

    Columns: ``instance`` (row in the Explanation), ``rank_by``'s value, the other ranking scores
    present, ``norm_percentile`` if present, the black box's class, the target, whether the
    counterfactual succeeded, and with ``y_true`` the true class and whether the black box erred.
    """
    score = ranking_score(explanation, rank_by)
    order = np.argsort(np.where(np.isnan(score), np.inf, score), kind="stable")
    if top is not None:
        order = order[:top]
    names = np.asarray(explanation.class_names, dtype=object)
    cols: dict[str, NDArray] = {"instance": order, rank_by: score[order]}
    for key in ranking_keys(explanation):
        if key != rank_by:
            cols[key] = ranking_score(explanation, key)[order]
    if "norm_percentile" in explanation.diagnostics:
        cols["norm_percentile"] = explanation.diagnostics["norm_percentile"][order]
    cols["black box class"] = names[explanation.predictions[order]]
    cols["target"] = names[explanation.targets[order]]
    if explanation.success is not None:
        cols["flipped"] = explanation.success[order]
    if y_true is not None:
        err = errors_of(explanation, y_true)
        cols["true class"] = names[np.asarray(y_true)[order]]
        cols["black box wrong"] = err[order]
    frame = pd.DataFrame(cols)
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="rank")
    return frame


def triage_scatter_figure(
    norms: NDArray,
    is_error: NDArray,
    *,
    density: NDArray | None = None,
    k_pct: float | None = 10.0,
    norm_name: str = "perturbation norm",
    density_name: str = "DDU density",
) -> go.Figure:
    """Where the black box's errors lie by perturbation size (and density, for images).

    Without ``density``: overlaid histograms of the norm for correct and wrong predictions, with the
    smallest-k% cut-off as a vertical line. With ``density``: norm against density, errors in red.
    """
    s = np.asarray(norms, dtype=np.float64).ravel()
    err = np.asarray(is_error, dtype=bool).ravel()
    cut = None
    if k_pct is not None and len(s):
        flagged = smallest_k_mask(s, k_pct)
        cut = float(s[flagged].max()) if flagged.any() else None
    fig = go.Figure()
    if density is None:
        # One set of bins for both groups: per-group bins of different widths mislead.
        finite = s[np.isfinite(s)]
        edges = np.histogram_bin_edges(finite, bins=50) if len(finite) else np.array([0.0, 1.0])
        bins = {
            "start": float(edges[0]),
            "end": float(edges[-1]),
            "size": float(edges[1] - edges[0]) or 1.0,
        }
        for mask, name, colour in (
            (~err, "black box right", "#7f7f7f"),
            (err, "black box wrong", "#d62728"),
        ):
            fig.add_trace(
                go.Histogram(
                    x=s[mask].astype(np.float32),
                    name=f"{name} ({int(mask.sum()):,})",
                    marker_color=colour,
                    opacity=0.6,
                    histnorm="probability",
                    xbins=bins,
                )
            )
        fig.update_layout(barmode="overlay", xaxis_title=norm_name, yaxis_title="share of group")
        if cut is not None:
            fig.add_vline(
                x=cut,
                line={"color": "#d62728", "dash": "dash"},
                annotation_text=f"smallest {k_pct:g}% at or below",
                annotation_position="top left",
            )
    else:
        d = np.asarray(density, dtype=np.float64).ravel()
        if d.shape != s.shape:
            raise ValueError(f"density has {d.shape[0]} entries, norms {s.shape[0]}")
        for mask, name, colour in (
            (~err, "black box right", "#9e9e9e"),
            (err, "black box wrong", "#d62728"),
        ):
            fig.add_trace(
                go.Scattergl(
                    x=s[mask].astype(np.float32),
                    y=d[mask].astype(np.float32),
                    mode="markers",
                    name=f"{name} ({int(mask.sum()):,})",
                    marker={"color": colour, "size": 5, "opacity": 0.7},
                    customdata=np.flatnonzero(mask),
                    hovertemplate=f"instance %{{customdata}}<br>{norm_name} %{{x:.3g}}<br>{density_name} %{{y:.3g}}<extra></extra>",
                )
            )
        fig.update_layout(
            xaxis_title=f"{norm_name} (smaller = closer to the boundary)",
            yaxis_title=f"{density_name} (lower = less like the training data)",
        )
        if cut is not None:
            fig.add_vline(x=cut, line={"color": "#d62728", "dash": "dash"})
    fig.update_layout(
        title=f"{norm_name.capitalize()} of right and wrong predictions",
        legend={"orientation": "h", "y": -0.2},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        height=360,
    )
    return fig
