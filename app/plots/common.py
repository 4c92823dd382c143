"""Figures for the Data & model page."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from app.text import plot_texts


def confusion_matrix_figure(
    matrix: list[list[int]] | np.ndarray, class_names: list[str]
) -> go.Figure:
    """Counts with rows = true class, columns = predicted class; cells annotated with count and row %."""
    m = np.asarray(matrix, dtype=np.int64)
    row_share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    text = [
        [f"{m[i, j]:,}<br>{row_share[i, j]:.0%}" for j in range(m.shape[1])]
        for i in range(m.shape[0])
    ]
    fig = go.Figure(
        go.Heatmap(
            z=row_share,
            x=plot_texts(class_names),
            y=plot_texts(class_names),
            text=text if m.shape[0] <= 12 else None,
            texttemplate="%{text}" if m.shape[0] <= 12 else None,
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": "share of row"},
            hovertemplate="true %{y}, predicted %{x}<br>%{text}<extra></extra>",
        )
    )
    fig.update_layout(
        xaxis_title="predicted class",
        yaxis_title="true class",
        yaxis_autorange="reversed",
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        height=360,
        title="Confusion matrix on the test split",
    )
    return fig


def class_balance_figure(counts: dict[str, int]) -> go.Figure:
    names, values = plot_texts(counts), list(counts.values())
    fig = go.Figure(go.Bar(x=names, y=values, text=[f"{v:,}" for v in values], textposition="auto"))
    fig.update_layout(
        title="Rows per class (train + test)",
        xaxis_title="class",
        yaxis_title="rows",
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        height=300,
        xaxis_type="category",
    )
    return fig
