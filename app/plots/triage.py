"""Uncertainty triage figures: do the smallest perturbations flag the black box's own mistakes?

EMAP's premise is that a point which needs only a small change to flip lies close to the decision
boundary, where the black box is least sure. Instances are ranked by perturbation size (smaller =
more suspicious; for images optionally by a DDU density, lower = more suspicious); how well "the
smallest k%" picks out the instances the black box gets wrong on the test split (precision,
recall, AUROC) is computed in ``app.analysis``; these builders draw it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from numpy.typing import NDArray

from app.analysis import smallest_k_mask, triage_curve, triage_scores


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
    scores = triage_scores(norms, is_error, 10.0 if k_pct is None else k_pct)
    base, auroc = scores["base_rate"], scores["auroc"]
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
