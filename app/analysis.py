"""What the views compute from a run before anything is drawn; ``app.plots`` only draws.

Plain data in, plain data out (NumPy arrays, frames, small dataclasses); no streamlit, no plotly.
Figures of merit about explanations live in ``explainers`` and are reused here, not copied:
``explainers.quality.triage`` (AUROC and precision of an uncertainty score) and
``explainers.quality.changed_units`` (which original features a counterfactual changes),
``explainers.metrics`` for agreement between attributions.

* which test rows a run explained (:func:`explained_test_rows`), from ``Explanation.rows``;
* one signed vector per instance of any Explanation (:func:`explanation_vectors`) and its size
  (:func:`vector_sizes`), the agreement between methods on them;
* uncertainty triage: the smallest-k% rule, its scores and curve, the ranking of instances;
* the plane a 2-D figure is drawn in (:func:`project_2d`) and the black box's class
  probabilities on a grid of it (:func:`decision_regions`, which runs the model);
* the black box's probabilities on counterfactuals, and the counterfactual table's change mask;
* verified or raw counterfactuals (:func:`counterfactual_version`) and how each verified one was
  obtained (:func:`verification_status`).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from datasets.base import Dataset, FeatureSchema
from explainers.explanation import Explanation

PERTURBATION_NORM = "‖x′ − x‖"
ATTRIBUTION_NORM = "‖attribution‖"
# Diagnostics that rank instances, most useful first; "lower = more suspicious" for all of them.
RANKING_KEYS = ("perturbation_norm", "density", "ddu_density", "log_density")
REGION_PAD = 0.08  # decision regions reach this share of the points' extent beyond them
PCA_BLOCK = 65_536  # rows per block when a big matrix is projected or summed
ROW_TOL = 1e-6  # inputs equal to the test split's rows within this are those rows


# --------------------------------------------------------------------------- which rows
def explained_test_rows(explanation: Explanation, dataset: Dataset) -> slice | None:
    """The rows of ``dataset``'s test split that ``explanation`` explains, in order, or None when
    they are not such a run of rows (another split, a subset, rows of another data set).

    Read from ``explanation.rows``; a result saved before rows were recorded is matched by its
    inputs against the first test rows instead. Either way the inputs must equal those rows (a
    run's data set may have changed since)."""
    n, X_test = explanation.n, dataset.X_test
    if explanation.rows is not None:
        if explanation.rows["split"] != "test":
            return None
        start, stop = int(explanation.rows["start"]), int(explanation.rows["stop"])
    else:
        start, stop = 0, n
    if stop > len(X_test) or stop - start != n:
        return None
    if not np.allclose(explanation.inputs, X_test[start:stop], atol=ROW_TOL):
        return None
    return slice(start, stop)


def true_labels(explanation: Explanation, dataset: Dataset | None) -> NDArray[np.int64] | None:
    """The true class of every explained row: the ones recorded with the result
    (``Explanation.labels``), else, for a result saved without them, ``dataset``'s test labels
    of the rows it explains (None when they are not test rows, see ``explained_test_rows``, or
    no ``dataset`` is given)."""
    if explanation.labels is not None:
        return explanation.labels
    if dataset is None:
        return None
    rows = explained_test_rows(explanation, dataset)
    return None if rows is None else np.asarray(dataset.y_test[rows], dtype=np.int64)


def shared_rows(explanations: Mapping[str, Explanation]) -> int | None:
    """How many leading instances every Explanation shares (the same rows, in the same order):
    the smallest ``n`` when they all explain the same split from the same row (by ``rows``; by
    their inputs for results saved before), else None."""
    exps = list(explanations.values())
    if not exps:
        return None
    common = min(e.n for e in exps)
    recorded = [e.rows for e in exps]
    if all(r is not None for r in recorded):
        if len({(r["split"], r["start"]) for r in recorded if r is not None}) == 1:
            return common
        return None
    base = exps[0].inputs[:common]
    if all(np.allclose(e.inputs[:common], base, atol=ROW_TOL) for e in exps[1:]):
        return common
    return None


def errors_of(explanation: Explanation, y_true: NDArray) -> NDArray[np.bool_]:
    """Whether the black box's class (``explanation.predictions``) differs from ``y_true``."""
    y = np.asarray(y_true).ravel()
    if len(y) != explanation.n:
        raise ValueError(
            f"{len(y)} true labels for {explanation.n} explained instances; pass the labels of the "
            "rows that were explained (the test split, in the same order)"
        )
    return explanation.predictions != y


# --------------------------------------------------------------------------- vectors
def explanation_vectors(explanation: Explanation) -> tuple[NDArray[np.float64], str]:
    """One signed vector per instance, (n, d), and a phrase saying what it is.

    ``attributions`` when present (LIME, SHAP, IG, and EMAP's negative perturbation); else the
    negative perturbation ``-(x' - x)`` (DeDUCE, JSMA), so signs line up across methods. Raises
    ``ValueError`` for an Explanation with neither.
    """
    if explanation.attributions is not None:
        vectors = np.asarray(explanation.attributions, dtype=np.float64)
        if explanation.counterfactuals is not None:
            return vectors, "negative perturbation −(x′ − x)"
        return vectors, "attribution towards the explained class"
    if explanation.perturbations is not None:
        return -np.asarray(explanation.perturbations, dtype=np.float64), (
            "negative perturbation −(x′ − x)"
        )
    raise ValueError(
        f"the {explanation.method!r} explanation has neither attributions nor counterfactuals; "
        "there is nothing to draw"
    )


def vector_sizes(explanation: Explanation) -> tuple[NDArray[np.float64], str]:
    """The size of each instance's vector and its name: ``diagnostics["perturbation_norm"]`` if
    present, else the norm of ``explanation_vectors`` (a perturbation's or an attribution's)."""
    if "perturbation_norm" in explanation.diagnostics:
        norms = np.asarray(explanation.diagnostics["perturbation_norm"], dtype=np.float64)
        return norms.reshape(explanation.n), PERTURBATION_NORM
    vectors, _ = explanation_vectors(explanation)
    name = PERTURBATION_NORM if explanation.counterfactuals is not None else ATTRIBUTION_NORM
    return np.linalg.norm(vectors, axis=1), name


def agreement_rows_by_pair(
    vectors: Mapping[str, NDArray], measure: str = "cosine", k: int = 5
) -> dict[str, NDArray[np.float64]]:
    """Per-instance ``measure`` for every pair of methods (``{"a|b": (n,) values}``).

    ``vectors`` maps a method to its (n, d) vectors for the same instances in the same order
    (:func:`explanation_vectors`).
    """
    from explainers.metrics import agreement_rows

    names = list(vectors)
    return {
        f"{a}|{b}": agreement_rows(vectors[a], vectors[b], k)[measure]
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }


def agreement_table(matrix: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """The agreement matrix (``explainers.metrics.agreement_matrix``) as a frame: one row per
    pair, one column per measure."""
    frame = pd.DataFrame.from_dict({k: dict(v) for k, v in matrix.items()}, orient="index")
    frame.index = [k.replace("|", " vs ") for k in frame.index]
    frame.index.name = "pair"
    return frame


def mean_cosines(explanation: Explanation, other: Explanation) -> tuple[float, float]:
    """Mean cosine between two runs' vectors over the rows both explain, and the same without
    the first run's smallest 10% (by ``vector_sizes``)."""
    from explainers.metrics import mean_cosine

    common = min(explanation.n, other.n)
    part = explanation.subset(slice(0, common))
    mine = explanation_vectors(part)[0]
    theirs = explanation_vectors(other.subset(slice(0, common)))[0]
    return (
        mean_cosine(mine, theirs),
        mean_cosine(mine, theirs, exclude_smallest_pct=10, size=vector_sizes(part)[0]),
    )


# --------------------------------------------------------------------------- triage
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
    """How well the smallest ``k_pct`` % of ``norms`` flags the errors in ``is_error``
    (``explainers.quality.triage`` on ``-norms``, plus the recall).

    Parameters
    ----------
    norms : (n,) perturbation sizes (or any score where smaller means more suspicious).
    is_error : (n,) bool, whether the black box got each instance wrong.
    k_pct : share of instances flagged, in percent.

    Returns
    -------
    ``precision`` (errors among the flagged; NaN when none is), ``recall`` (flagged errors / all errors; NaN
    without errors), ``auroc`` (the chance that a random error has a smaller norm than a random
    correct instance; NaN when only one kind is present), ``base_rate`` (the error rate: the
    precision of flagging at random), ``flagged``, ``errors`` and ``n``.
    """
    from explainers.quality import triage

    s = np.asarray(norms, dtype=np.float64).ravel()
    err = np.asarray(is_error, dtype=bool).ravel()
    if s.shape != err.shape:
        raise ValueError(f"norms has {s.shape[0]} entries but is_error has {err.shape[0]}")
    scores = triage(-s, err, k_pct=k_pct)
    flagged = smallest_k_mask(s, k_pct)  # the same rows quality.triage ranks first
    n_flagged, n_err = int(flagged.sum()), int(err.sum())
    return {
        "precision": scores["precision_at_k"] if n_flagged else float("nan"),
        "recall": int((flagged & err).sum()) / n_err if n_err else float("nan"),
        "auroc": scores["auroc"],
        "base_rate": scores["error_rate"],
        "flagged": float(n_flagged),
        "errors": float(n_err),
        "n": float(len(s)),
    }


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


# --------------------------------------------------------------------------- the plane
@dataclass(frozen=True)
class Projection2D:
    """A linear map from model space (d) to the plane, and back onto a 2-D slice of model space.

    ``coords = (X - center) @ components.T``; ``lift(U) = base + U @ components`` puts plane
    coordinates back into model space (``coords(lift(U)) == U``). Vectors (arrows) map with
    ``components`` alone.

    Attributes
    ----------
    method : ``"identity"`` (2-D data), ``"features"`` or ``"pca"``.
    components : (2, d) the two directions (unit vectors).
    center : (d,) subtracted before projecting (the data mean for PCA, zeros otherwise).
    base : (d,) the model-space point that plane coordinates (0, 0) lift to.
    labels : the two axis titles; projections say "(projection)".
    coords : (n, 2) float64, the projected rows of the X it was made from.
    explained_variance : for PCA, the share of variance along each component.
    """

    method: str
    components: NDArray[np.float64]
    center: NDArray[np.float64]
    base: NDArray[np.float64]
    labels: tuple[str, str]
    coords: NDArray[np.float64]
    explained_variance: tuple[float, float] | None = None

    @property
    def is_slice(self) -> bool:
        """True when the plane is a slice of a higher-dimensional space (background is a slice too)."""
        return self.method != "identity"

    def points(self, X: NDArray) -> NDArray[np.float64]:
        X = np.asarray(X)
        out = np.empty((len(X), 2))
        for s in range(0, len(X), PCA_BLOCK):  # no (n, d) float64 copy of a big X
            out[s : s + PCA_BLOCK] = (
                np.asarray(X[s : s + PCA_BLOCK], dtype=np.float64) - self.center
            ) @ self.components.T
        return out

    def vectors(self, V: NDArray) -> NDArray[np.float64]:
        return np.asarray(V, dtype=np.float64) @ self.components.T

    def lift(self, U: NDArray) -> NDArray[np.float64]:
        return self.base + np.asarray(U, dtype=np.float64) @ self.components


def project_2d(
    X: NDArray,
    method: str = "pca",
    features: tuple[int, int] = (0, 1),
    feature_names: list[str] | None = None,
) -> Projection2D:
    """Project (n, d) rows to the plane, with axis labels that say what the axes are.

    ``method="features"`` keeps columns ``features`` (other features are not shown; the
    background slice holds them at their mean). ``method="pca"`` uses the first two principal
    components of ``X`` (signs fixed so the largest loading is positive) and labels the axes
    "PCA component 1 (projection)", so nobody reads them as raw features. Two-column data with
    ``features=(0, 1)`` gives the identity.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"need a non-empty (n, d) array to project, got shape {X.shape}")
    n, d = X.shape
    names = feature_names or [f"feature {j}" for j in range(d)]
    if method == "features":
        i, j = (int(f) for f in features)
        if not (0 <= i < d and 0 <= j < d) or i == j:
            raise ValueError(
                f"features must be two different columns in 0..{d - 1}, got {features}"
            )
        comps = np.zeros((2, d))
        comps[0, i] = comps[1, j] = 1.0
        identity = d == 2 and (i, j) == (0, 1)
        base = _column_means(X)
        base[[i, j]] = 0.0
        suffix = "" if identity else " (projection: other features at their mean)"
        return Projection2D(
            method="identity" if identity else "features",
            components=comps,
            center=np.zeros(d),
            base=np.zeros(d) if identity else base,
            labels=(names[i] + ("" if identity else " (projection)"), names[j] + suffix),
            coords=X[:, [i, j]].astype(np.float64),
        )
    if method != "pca":
        raise ValueError(f"method must be 'pca' or 'features', got {method!r}")
    if d < 2:
        raise ValueError("PCA to two components needs at least two features")
    # The principal axes are the top eigenvectors of the (d, d) scatter matrix, summed a block of
    # rows at a time: an SVD of the whole centred matrix took 1.7 s and three (n, d) float64
    # copies (220 MB) for a million-row run's 250,000 explained rows.
    center = _column_means(X)
    scatter = np.zeros((d, d))
    for s in range(0, n, PCA_BLOCK):
        block = np.asarray(X[s : s + PCA_BLOCK], dtype=np.float64) - center
        scatter += block.T @ block
    var, vecs = np.linalg.eigh(scatter)  # ascending
    var = np.clip(var[::-1], 0.0, None)
    comps = vecs[:, ::-1][:, :2].T.copy()
    # Eigenvector signs are arbitrary; fix them so the same data always gives the same picture.
    flip = np.sign(comps[np.arange(2), np.abs(comps).argmax(axis=1)])
    comps *= np.where(flip == 0, 1.0, flip)[:, None]
    share = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    projection = Projection2D(
        method="pca",
        components=comps,
        center=center,
        base=center.copy(),
        labels=("PCA component 1 (projection)", "PCA component 2 (projection)"),
        coords=np.zeros((0, 2)),
        explained_variance=(float(share[0]), float(share[1])),
    )
    return replace(projection, coords=projection.points(X))


def _column_means(X: NDArray) -> NDArray[np.float64]:
    """Column means in float64, a block of rows at a time (no float64 copy of a float32 X)."""
    total = np.zeros(X.shape[1])
    for s in range(0, len(X), PCA_BLOCK):
        total += np.asarray(X[s : s + PCA_BLOCK], dtype=np.float64).sum(axis=0)
    return total / len(X)


@dataclass(frozen=True)
class DecisionRegions:
    """The black box's class probabilities on a grid of the plane.

    ``proba[r, c]`` is the probability vector at ``(xs[c], ys[r])``; shape (len(ys), len(xs), C).
    ``is_slice`` says the grid is a 2-D slice of a higher-dimensional space (the other features
    are fixed), so a point's own region may differ from the background under it.
    """

    xs: NDArray[np.float64]
    ys: NDArray[np.float64]
    proba: NDArray[np.float32]
    class_names: list[str]
    is_slice: bool = False
    held: str = ""


def valid_rows(rows: NDArray, schema: FeatureSchema) -> NDArray[np.float64]:
    """Each model-space row made one the data could hold: the nearest one-hot row in every
    categorical block (its largest entry set to 1, the rest to 0), continuous features clipped to
    the training range and, for integer features, rounded in original units.

    A plane through the data's mean has fractional one-hot entries (0.67 of one sex, 0.33 of the
    other) and runs off the training range at its edges: a tree ensemble answers such rows with
    steps that no real row would show. Snapping makes the background the black box's answer on
    real rows, at the cost of the slice no longer being flat in the one-hot columns.
    """
    out = np.array(rows, dtype=np.float64, copy=True)
    for j, feature in enumerate(schema.continuous):
        col = np.clip(out[:, j], feature.lo, feature.hi)
        if feature.integer and feature.std > 0:
            col = (np.round(col * feature.std + feature.mean) - feature.mean) / feature.std
            col = np.clip(col, feature.lo, feature.hi)
        out[:, j] = col
    for block in schema.blocks:
        top = out[:, block].argmax(axis=1)
        hot = np.zeros_like(out[:, block])
        hot[np.arange(len(out)), top] = 1.0
        out[:, block] = hot
    return out


def _held_text(projection: Projection2D, schema: FeatureSchema | None) -> str:
    """What the slice holds the unshown features at, in words for the chart."""
    if not projection.is_slice:
        return ""
    if projection.method == "pca":
        text = "slice through the data's mean along the two PCA components"
    else:
        text = "slice with the other features at their mean"
    if schema is None or not schema.categorical:
        return text
    return (
        f"{text}; each grid point made a real row: categories at their largest one-hot "
        "value, numbers within the training range"
    )


def plane_limits(
    points: NDArray, pad: float = REGION_PAD
) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(xlim, ylim)`` around (n, 2) plane points, ``pad`` of their extent beyond them on each
    side: the grid the decision regions are drawn on."""
    pts = np.asarray(points, dtype=np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    margin = pad * (hi - lo)
    return (
        (float(lo[0] - margin[0]), float(hi[0] + margin[0])),
        (float(lo[1] - margin[1]), float(hi[1] + margin[1])),
    )


def decision_regions(
    model: Any,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    resolution: int = 150,
    projection: Projection2D | None = None,
    batch_size: int = 20_000,
    schema: FeatureSchema | None = None,
) -> DecisionRegions:
    """Evaluate ``model.predict_proba`` on a ``resolution`` x ``resolution`` grid.

    With a ``projection`` the grid is lifted into model space with ``projection.lift`` (a slice
    through ``projection.base``); without one the model must take two features. With a
    ``schema`` the lifted rows are made valid (``valid_rows``) before the model sees them.
    """
    if resolution < 2:
        raise ValueError("resolution must be at least 2")
    xs = np.linspace(float(xlim[0]), float(xlim[1]), resolution)
    ys = np.linspace(float(ylim[0]), float(ylim[1]), resolution)
    gx, gy = np.meshgrid(xs, ys)
    plane = np.column_stack([gx.ravel(), gy.ravel()])
    rows = plane if projection is None else projection.lift(plane)
    if projection is not None and projection.is_slice and schema is not None:
        rows = valid_rows(rows, schema)
    rows = rows.astype(np.float32)
    proba = np.concatenate(
        [
            np.asarray(model.predict_proba(rows[s : s + batch_size]))
            for s in range(0, len(rows), batch_size)
        ]
    )
    return DecisionRegions(
        xs=xs,
        ys=ys,
        proba=proba.reshape(resolution, resolution, -1).astype(np.float32),
        class_names=list(
            getattr(model, "class_names", None) or [str(c) for c in range(proba.shape[1])]
        ),
        is_slice=projection is not None and projection.is_slice,
        held="" if projection is None else _held_text(projection, schema),
    )


def regions_around(
    model: Any,
    explanation: Explanation,
    projection: Projection2D | None = None,
    resolution: int = 120,
) -> DecisionRegions:
    """The black box's regions on a grid around the explained points (``plane_limits``), in
    ``projection``'s plane (None: the data's own two columns). A slice of tabular data is
    evaluated on valid rows only (``valid_rows`` with the explanation's schema)."""
    proj = projection or project_2d(explanation.inputs, "features", (0, 1))
    xlim, ylim = plane_limits(proj.points(explanation.inputs))
    return decision_regions(
        model,
        xlim,
        ylim,
        resolution,
        projection=None if projection is None else proj,
        schema=explanation.schema,
    )


# --------------------------------------------------------------------------- the saved plane
@dataclass(frozen=True)
class FieldPlane:
    """The arrow field's default plane and the black box's regions on it, computed by the job that
    made the run (``field_plane``) and saved with it (``save_field_plane``): the page paints its
    default view without starting the black box (an uploaded model's sandbox took most of the
    page's time) and without projecting the run's rows again.

    ``axes`` is the page's key for the plane: ``("identity",)`` for 2-D data (``projection``
    None: the data's own columns) or ``("pca",)``.
    """

    axes: tuple[str, ...]
    projection: Projection2D | None
    regions: DecisionRegions


def field_axes(explanation: Explanation) -> tuple[str, ...] | None:
    """The plane the arrow field opens on: the data's own two columns, or PCA above two; None
    for a run the field does not draw (images, one feature, no vectors)."""
    d = explanation.inputs.shape[1]
    if explanation.modality == "image" or d < 2:
        return None
    if explanation.attributions is None and explanation.counterfactuals is None:
        return None
    return ("identity",) if d == 2 else ("pca",)


def field_plane(model: Any, explanation: Explanation) -> FieldPlane | None:
    """What the arrow field's default view needs of the black box (``field_axes``), for the job to
    save with the run; None when the field does not draw it."""
    axes = field_axes(explanation)
    if axes is None:
        return None
    projection = project_2d(explanation.inputs, "pca") if axes == ("pca",) else None
    return FieldPlane(axes, projection, regions_around(model, explanation, projection))


def save_field_plane(path: Any, plane: FieldPlane) -> None:
    """Write ``plane`` as one uncompressed ``.npz`` of plain arrays (no pickle): the texts go as
    a JSON record in a byte array."""
    r, proj = plane.regions, plane.projection
    meta = {
        "axes": list(plane.axes),
        "class_names": list(r.class_names),
        "is_slice": r.is_slice,
        "held": r.held,
        "projection": None
        if proj is None
        else {
            "method": proj.method,
            "labels": list(proj.labels),
            "explained_variance": proj.explained_variance,
        },
    }
    arrays = {
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        "xs": r.xs,
        "ys": r.ys,
        "proba": r.proba,
    }
    if proj is not None:
        arrays.update(components=proj.components, center=proj.center, base=proj.base)
        arrays["coords"] = proj.coords
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def load_field_plane(path: Any, n: int, d: int) -> FieldPlane:
    """Read what ``save_field_plane`` wrote for a run of ``n`` rows and ``d`` features;
    ``ValueError`` when the file is damaged or does not fit those rows."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            a = {k: npz[k] for k in npz.files}
        meta = json.loads(a["meta"].tobytes().decode("utf-8"))
        axes = tuple(str(x) for x in meta["axes"])
        xs, ys, proba = a["xs"], a["ys"], a["proba"]
        classes = [str(c) for c in meta["class_names"]]
        if proba.shape != (len(ys), len(xs), len(classes)) or axes not in (("identity",), ("pca",)):
            raise ValueError(f"regions of shape {proba.shape} for axes {axes}")
        projection = None
        if axes == ("pca",):
            p = meta["projection"]
            comps, center, coords = a["components"], a["center"], a["coords"]
            if comps.shape != (2, d) or center.shape != (d,) or coords.shape != (n, 2):
                raise ValueError(
                    f"a plane for {coords.shape[0]} rows of {center.shape} features, not {n} of {d}"
                )
            variance = p["explained_variance"]
            projection = Projection2D(
                method=str(p["method"]),
                components=comps,
                center=center,
                base=a["base"],
                labels=(str(p["labels"][0]), str(p["labels"][1])),
                coords=coords,
                explained_variance=None if variance is None else (variance[0], variance[1]),
            )
        elif d != 2:
            raise ValueError(f"a plane of the data's own columns for {d} features")
        regions = DecisionRegions(
            xs=xs, ys=ys, proba=proba, class_names=classes,
            is_slice=bool(meta["is_slice"]), held=str(meta["held"]),
        )  # fmt: skip
    except (
        KeyError, IndexError, TypeError, EOFError, UnicodeDecodeError, json.JSONDecodeError,
        zipfile.BadZipFile,
    ) as exc:  # fmt: skip
        raise ValueError(f"unreadable: {exc}") from None
    return FieldPlane(axes, projection, regions)


# --------------------------------------------------------------------------- counterfactuals
def class_probabilities(
    model: Any, explanations: Mapping[str, Explanation], index: int
) -> tuple[NDArray[np.float64], dict[str, NDArray[np.float64]]]:
    """The black box's probabilities for the original row (of the first explanation) and for
    each counterfactual. One ``predict_proba`` call per method; nothing is trained."""
    labels = list(explanations)
    if not labels:
        raise ValueError("no explanations given")
    first = explanations[labels[0]]
    before = np.asarray(model.predict_proba(first.inputs[[index]]))[0]
    after = {}
    for m in labels:
        e = explanations[m]
        if e.counterfactuals is None:
            continue
        after[m] = np.asarray(model.predict_proba(e.counterfactuals[[index]]))[0]
    return before, after


def change_mask(
    explanation: Explanation, *, rel_tol: float | None = None, rows: NDArray | None = None
) -> pd.DataFrame:
    """(n, original features) bool frame: which original features each counterfactual changes
    (``explainers.quality.changed_units``: a category, a rounded integer, a continuous value by
    more than ``rel_tol`` of its standard deviation)."""
    from explainers.quality import CHANGE_REL_TOL, changed_units

    if explanation.counterfactuals is None:
        raise ValueError(
            f"the {explanation.method!r} explanation has no counterfactuals; the counterfactual "
            "table needs a method that gives them"
        )
    idx = np.arange(explanation.n) if rows is None else np.asarray(rows)
    schema = explanation.schema
    changed = changed_units(
        explanation.inputs[idx],
        explanation.counterfactuals[idx],
        schema,
        rel_tol=CHANGE_REL_TOL if rel_tol is None else rel_tol,
    )
    names = schema.original_names if schema is not None else list(explanation.feature_names)
    return pd.DataFrame(changed, index=idx, columns=names)


# --------------------------------------------------------------------------- verified or raw
VERIFIED, RAW = "verified", "raw"
STATUS_TEXT = {
    "as is": "Verified on the black box: the method's own counterfactual flipped it. Shown is the "
    "smallest change the verification then found that still flips it, never larger than the "
    "method's own (where one feature is enough, the smallest such change, which may be a feature "
    "the method did not change).",
    "repaired": "Repaired: the method's own counterfactual did not flip the black box; this one, "
    "found by the verification, does.",
    "failed": "Failed: no counterfactual that flips the black box was found for this row. Shown is "
    "the method's own proposal, which the black box does NOT put in the target class.",
    "from a training image": "Made from a training image, not by the method: a step towards one "
    "of the three training images nearest this row that the black box puts in the target class "
    "(the one it flips soonest), with every pixel set back to this row's that can go while the "
    "black box keeps the target (a fixed rule: the same whatever the "
    "method's seed). The method's own counterfactual is the raw one.",
}


def counterfactual_version(
    explanation: Explanation, version: Literal["verified", "raw"] = VERIFIED
) -> Explanation:
    """The Explanation with the counterfactuals a view should draw.

    ``"verified"``: as stored (for a verifying method such as EMAP, the counterfactuals the black
    box confirmed). ``"raw"``: the method's one-pass output in their place, with the black box's
    class for each and whether it reached the target, for comparison with the paper, and no
    verification status (``verified`` is False). Diagnostics
    (the perturbation-size percentile, the uncertainty score) stay the verified ones either way.
    Raises ``ValueError`` for ``"raw"`` on a result that keeps no raw counterfactuals.
    """
    if version == VERIFIED:
        return explanation
    if version != RAW:
        raise ValueError(f"unknown counterfactual version {version!r}; use 'verified' or 'raw'")
    if (
        explanation.raw_counterfactuals is None
        or explanation.raw_counterfactual_predictions is None
    ):
        raise ValueError(
            f"the {explanation.method!r} result keeps no raw counterfactuals (the method does not "
            "verify them on the black box, or the run predates verification); only the stored "
            "counterfactuals can be shown"
        )
    return replace(
        explanation,
        counterfactuals=explanation.raw_counterfactuals,
        counterfactual_predictions=explanation.raw_counterfactual_predictions,
        success=explanation.raw_success,
        counterfactual_status=None,  # the raw ones were not obtained by verification
    )


def verification_status(explanation: Explanation, index: int) -> tuple[str, str] | None:
    """How row ``index``'s verified counterfactual was obtained: ``(status, sentence)`` with
    status "as is", "repaired", "failed" or "from a training image" (``STATUS_TEXT``); None when
    the method does not verify its counterfactuals."""
    names = explanation.status_names()
    if names is None:
        return None
    status = names[index]
    return status, STATUS_TEXT[status]


def status_counts(explanation: Explanation) -> dict[str, int] | None:
    """How many rows were verified as is, repaired, failed, or made from a training image (None
    when not verified)."""
    status = explanation.counterfactual_status
    if status is None:
        return None
    counts = np.bincount(np.asarray(status, dtype=np.int64), minlength=len(STATUS_TEXT))
    return {k: int(c) for k, c in zip(STATUS_TEXT, counts, strict=True)}
