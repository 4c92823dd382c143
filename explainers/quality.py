"""The quality report card of a run: is an explanation faithful, plausible, robust, better than chance?

Every figure is computed on the run itself, from plain arrays (axis 0 = instance), and the card
(:func:`quality_card`) gathers them as plain JSON data. The figures follow the evaluation
libraries of the field, so a number here means what it means there:

* **Counterfactuals** (CARLA): validity on the black box, proximity (L1, L2, L1 per median absolute
  deviation), sparsity, plausibility (yNN, local-outlier-factor inliers; DDU log-density for
  images), constraint violations, seconds per counterfactual. The baseline is the *nearest real
  example*: for each input, the nearest training row that the black box puts in the target class.
  A counterfactual method earns its keep by being closer and sparser than that copy while staying as
  plausible.
* **Attributions** (OpenXAI, Quantus, captum): deletion and insertion curves and their areas,
  prediction gap on important vs unimportant features, captum's ``sensitivity_max`` and
  ``infidelity``, and sparseness (Gini index). Every figure is computed also for a **random**
  attribution, so a reader sees whether a method beats chance.
* **Uncertainty triage**: how well a score (EMAP's perturbation size, DDU density) picks out the
  black box's own errors, beside the model's confidence margin (top-1 minus top-2 probability).
* **Sanity flags**: numerically zero or saturated attributions, methods that do not beat the random
  baseline, low validity, low surrogate fidelity.

Units. Model space is what models see (``datasets.base``): z-scores for tabular continuous features,
raw coordinates for 2-D points, pixel intensities in [0, 1] for images. A *feature* (a "unit" below)
is an original column: a continuous column, a whole one-hot block, or a pixel.

Attributions come in two kinds. SHAP and Integrated Gradients give *contributions* (slope times the
distance from a reference); LIME (per model-space unit) and EMAP's negative perturbation give
*slopes* (directions). Removal-based figures need contributions, so a slope ``a_j`` becomes
``a_j * (x_j - b_j)`` with ``b`` the removal baseline (the training mean): the first-order change of
the explained probability when column j is moved to the baseline (:func:`contributions`).

No torch import at module level; captum and torch are imported by ``sensitivity_max`` only
(``infidelity`` is captum's formula in numpy, since importing captum costs seconds).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from datasets.base import Dataset, FeatureSchema
from explainers.constraints import ConstraintError, Constraints, Recourse
from explainers.explanation import Explanation
from explainers.metrics import flip_rate
from explainers.models import Model

PredictProba = Callable[[NDArray], NDArray]
"""(m, d) model-space rows -> (m, C) class probabilities (a black box's ``predict_proba``)."""
AttributeFn = Callable[[NDArray, NDArray], NDArray]
"""(m, d) model-space rows and (m,) classes -> (m, d) attributions towards those classes."""
LogDensityFn = Callable[[NDArray, NDArray], NDArray]
"""(m, d) images and (m,) classes -> (m,) log-density of each image under its class."""
AttributionKind = Literal["slope", "contribution"]
Better = Literal["higher", "lower"]

CHANGE_REL_TOL = 0.01  # a continuous feature changed: |x' - x| > 1% of its standard deviation
PIXEL_TOL = 0.5 / 255  # a pixel changed: by more than half an 8-bit grey level (visible on screen)
BOUND_TOL = 1e-5  # model-space slack for "out of range" (float32 rounding of a clipped value)
ZERO_REL_TOL = 1e-6
SATURATION_TOL = 1e-4
MIN_VALIDITY = 0.9
MIN_SURROGATE_FIDELITY = 0.9
ZERO_SHARE_LIMIT = 0.01
SATURATED_SHARE_LIMIT = 0.5


# --------------------------------------------------------------------------- features (units)
def feature_units(schema: FeatureSchema | None, d: int) -> NDArray[np.int64]:
    """The original feature ("unit") each model-space column belongs to.

    Parameters
    ----------
    schema : the data set's layout, or None (then every column is its own unit).
    d : number of model-space columns.

    Returns
    -------
    (d,) int, non-decreasing: a continuous column and a pixel are one unit each, a one-hot block
    is one unit.
    """
    if schema is None:
        return np.arange(d, dtype=np.int64)
    if schema.width != d:
        raise ValueError(
            f"the data set's schema has {schema.width} model-space columns but the rows have {d}; "
            "use the data set the run was made on"
        )
    return schema.column_owner()


def unit_sums(values: NDArray, owner: NDArray[np.int64]) -> NDArray[np.float64]:
    """Sum model-space columns per unit: (n, d) -> (n, U), ``owner`` from :func:`feature_units`."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    return np.add.reduceat(values, starts, axis=1) if values.shape[1] else values


def _proba(predict: PredictProba, X: NDArray, batch_rows: int = 20_000) -> NDArray[np.float64]:
    """The black box's probabilities for any number of rows, ``batch_rows`` per call."""
    X = np.asarray(X)
    if len(X) == 0:
        return np.zeros((0, 0))
    parts = [
        np.asarray(predict(np.asarray(X[s : s + batch_rows], dtype=np.float32)), dtype=np.float64)
        for s in range(0, len(X), batch_rows)
    ]
    out = np.concatenate(parts)
    if out.ndim != 2 or len(out) != len(X):
        raise ValueError(
            f"predict_proba returned shape {out.shape} for {len(X)} rows; it must give (n, C) "
            "class probabilities"
        )
    return out


def _pick(proba: NDArray, classes: NDArray) -> NDArray[np.float64]:
    classes = np.asarray(classes, dtype=np.int64)
    if len(classes) and (classes.min() < 0 or classes.max() >= proba.shape[1]):
        raise ValueError(
            f"classes must be in 0..{proba.shape[1] - 1} (the black box gives {proba.shape[1]} "
            f"probabilities per row); got {int(classes.min())}..{int(classes.max())}"
        )
    return np.asarray(proba[np.arange(len(classes)), classes], dtype=np.float64)


def _pairs(X: NDArray, Y: NDArray, what: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
    if X.shape != Y.shape:
        raise ValueError(f"inputs have shape {X.shape} but {what} {Y.shape}; pass one row each")
    return X, Y


# --------------------------------------------------------------------------- counterfactuals
def proximity_l1(X: NDArray, counterfactuals: NDArray) -> NDArray[np.float64]:
    """L1 distance ``sum_j |x'_j - x_j|`` per row, in model space. Lower is better (a smaller change).

    Parameters
    ----------
    X, counterfactuals : (n, d) model-space rows.

    Returns
    -------
    (n,) float.
    """
    X, C = _pairs(X, counterfactuals, "counterfactuals")
    return np.abs(C - X).sum(axis=1)


def proximity_l2(X: NDArray, counterfactuals: NDArray) -> NDArray[np.float64]:
    """Euclidean distance ``||x' - x||_2`` per row, in model space. Lower is better.

    Parameters
    ----------
    X, counterfactuals : (n, d) model-space rows.

    Returns
    -------
    (n,) float.
    """
    X, C = _pairs(X, counterfactuals, "counterfactuals")
    return np.linalg.norm(C - X, axis=1)


def mad_scales(X_train: NDArray, schema: FeatureSchema) -> NDArray[np.float64]:
    """Each continuous feature's median absolute deviation on the training rows, in model space.

    The MAD in original units is this times the feature's ``std``, so a change divided by it is the
    same in either space. A feature whose MAD is 0 (mostly one value, like capital gain) falls back
    to its mean absolute deviation from the median; a constant feature gets 0 (and
    :func:`proximity_mad_l1` then counts any change of it as 1).

    Parameters
    ----------
    X_train : (m, d) model-space training rows.
    schema : the data set's layout.

    Returns
    -------
    (n_continuous,) float, >= 0.
    """
    Z = np.asarray(np.asarray(X_train)[:, : schema.n_continuous], dtype=np.float64)
    if len(Z) == 0:
        raise ValueError("no training rows to measure the median absolute deviation on")
    med = np.median(Z, axis=0)
    dev = np.abs(Z - med)
    mad = np.median(dev, axis=0)
    return np.where(mad > 0, mad, dev.mean(axis=0))


def changed_units(
    X: NDArray,
    counterfactuals: NDArray,
    schema: FeatureSchema | None,
    *,
    rel_tol: float = CHANGE_REL_TOL,
    pixel_tol: float = PIXEL_TOL,
) -> NDArray[np.bool_]:
    """Which original features each counterfactual changes.

    The rule of the counterfactual table (``app.plots.tabular.change_mask``), in model space:
    categorical, the block's argmax differs; integer continuous, the rounded original values
    differ; other continuous, ``|x' - x| > rel_tol`` standard deviations; a pixel,
    ``|x' - x| > pixel_tol`` intensity (half an 8-bit grey level by default). Without a schema each
    column is a feature compared with ``rel_tol``.

    Parameters
    ----------
    X, counterfactuals : (n, d) model-space rows.
    schema : the data set's layout or None.

    Returns
    -------
    (n, U) bool, one column per original feature (``feature_units``).
    """
    X, C = _pairs(X, counterfactuals, "counterfactuals")
    if schema is None:
        return np.abs(C - X) > rel_tol
    feature_units(schema, X.shape[1])  # width check
    if schema.image_shape is not None:
        return np.abs(C - X) > pixel_tol
    parts = []
    for j, f in enumerate(schema.continuous):
        if f.integer:
            a = np.rint(X[:, j] * f.std + f.mean)
            b = np.rint(C[:, j] * f.std + f.mean)
            parts.append(a != b)
        else:
            parts.append(np.abs(C[:, j] - X[:, j]) > rel_tol)
    for cat in schema.categorical:
        parts.append(X[:, cat.block].argmax(axis=1) != C[:, cat.block].argmax(axis=1))
    return np.column_stack(parts) if parts else np.zeros((len(X), 0), dtype=bool)


def sparsity(
    X: NDArray,
    counterfactuals: NDArray,
    schema: FeatureSchema | None,
    *,
    rel_tol: float = CHANGE_REL_TOL,
    pixel_tol: float = PIXEL_TOL,
) -> NDArray[np.int64]:
    """Number of original features (pixels for images) each counterfactual changes. Lower is better:
    a change of few features is easier to act on and to read.

    Parameters
    ----------
    X, counterfactuals : (n, d) model-space rows.
    schema : the data set's layout or None; tolerances as in :func:`changed_units`.

    Returns
    -------
    (n,) int.
    """
    changed = changed_units(X, counterfactuals, schema, rel_tol=rel_tol, pixel_tol=pixel_tol)
    return changed.sum(axis=1).astype(np.int64)


def proximity_mad_l1(
    X: NDArray,
    counterfactuals: NDArray,
    schema: FeatureSchema,
    scales: NDArray,
    *,
    rel_tol: float = CHANGE_REL_TOL,
) -> NDArray[np.float64]:
    """L1 distance with each feature in units of its spread (Wachter et al.'s MAD-weighted L1).

    Continuous features: ``|x' - x| / MAD`` (original units over the MAD in original units; see
    :func:`mad_scales`), a constant feature (MAD 0) counting 1 when it changes by more than
    ``rel_tol``; categorical features: 1 when the category changes. Lower is better; 1 is about one
    typical deviation of one feature.

    Parameters
    ----------
    X, counterfactuals : (n, d) model-space rows of a tabular (or 2-D) data set.
    schema : the data set's layout (not for images: use :func:`proximity_l1` there).
    scales : (n_continuous,) from :func:`mad_scales`.

    Returns
    -------
    (n,) float.
    """
    X, C = _pairs(X, counterfactuals, "counterfactuals")
    scales = np.asarray(scales, dtype=np.float64)
    if scales.shape != (schema.n_continuous,):
        raise ValueError(
            f"need one scale per continuous feature ({schema.n_continuous}), got {scales.shape}"
        )
    k = schema.n_continuous
    delta = np.abs(C[:, :k] - X[:, :k])
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(scales > 0, delta / np.where(scales > 0, scales, 1.0), delta > rel_tol)
    out = scaled.sum(axis=1)
    for cat in schema.categorical:
        out += X[:, cat.block].argmax(axis=1) != C[:, cat.block].argmax(axis=1)
    return out


def ynn(
    counterfactuals: NDArray,
    targets: NDArray,
    X_ref: NDArray,
    ref_classes: NDArray,
    *,
    k: int = 5,
) -> NDArray[np.float64]:
    """yNN (CARLA): the share of each counterfactual's ``k`` nearest reference rows that the black
    box puts in the counterfactual's target class. Higher is better: near 1, the counterfactual sits
    inside the target class's region of the data, not on an island of its own.

    Parameters
    ----------
    counterfactuals : (n, d) model-space rows.
    targets : (n,) target classes.
    X_ref : (m, d) reference rows (a bounded sample of the training split).
    ref_classes : (m,) the black box's classes of ``X_ref`` (not the labels: yNN is about the model).
    k : neighbours, capped at m.

    Returns
    -------
    (n,) float in [0, 1].
    """
    from sklearn.neighbors import NearestNeighbors

    C = np.atleast_2d(np.asarray(counterfactuals, dtype=np.float64))
    ref = np.asarray(X_ref, dtype=np.float64)
    if len(ref) == 0:
        raise ValueError("no reference rows for yNN; pass a sample of the training split")
    k = max(1, min(int(k), len(ref)))
    _, idx = NearestNeighbors(n_neighbors=k).fit(ref).kneighbors(C)
    return (np.asarray(ref_classes)[idx] == np.asarray(targets)[:, None]).mean(axis=1)


def lof_inliers(points: NDArray, X_ref: NDArray, *, n_neighbors: int = 20) -> NDArray[np.bool_]:
    """Whether a local outlier factor fitted on the reference rows calls each point an inlier.

    ``sklearn.neighbors.LocalOutlierFactor(novelty=True)``: a point whose neighbourhood is much
    sparser than its neighbours' is an outlier. The share of inliers among counterfactuals is higher
    is better (they look like data).

    Parameters
    ----------
    points : (n, d) model-space rows to judge (counterfactuals).
    X_ref : (m, d) reference rows (a bounded training sample: the fit is O(m^2) in the worst case).
    n_neighbors : LOF's neighbourhood size, capped at m - 1.

    Returns
    -------
    (n,) bool.
    """
    from sklearn.neighbors import LocalOutlierFactor

    ref = np.asarray(X_ref, dtype=np.float64)
    if len(ref) < 3:
        raise ValueError(
            f"the local outlier factor needs at least 3 reference rows, got {len(ref)}"
        )
    lof = LocalOutlierFactor(n_neighbors=max(1, min(int(n_neighbors), len(ref) - 1)), novelty=True)
    lof.fit(ref)
    return lof.predict(np.atleast_2d(np.asarray(points, dtype=np.float64))) == 1


def nearest_real_examples(
    X: NDArray, targets: NDArray, X_pool: NDArray, pool_classes: NDArray
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """The counterfactual baseline: for each input, the nearest (Euclidean, model space) pool row
    that the black box puts in the input's target class.

    Parameters
    ----------
    X : (n, d) inputs; targets : (n,) target classes.
    X_pool : (m, d) candidate real rows (training rows not used as the yNN/LOF reference).
    pool_classes : (m,) the black box's classes of ``X_pool``.

    Returns
    -------
    (n, d) nearest rows (the input itself where no pool row has the target class) and (n,) bool,
    whether one was found. Verified image counterfactuals start from the same kind of row
    (``explainers.counterfactuals.ImageBank.nearest``, on the bank an image method keeps).
    """
    from sklearn.neighbors import NearestNeighbors

    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    pool = np.asarray(X_pool, dtype=np.float64)
    pool_classes = np.asarray(pool_classes)
    targets = np.asarray(targets)
    out = X.copy()
    found = np.zeros(len(X), dtype=bool)
    for c in np.unique(targets):
        candidates = pool[pool_classes == c]
        rows = np.flatnonzero(targets == c)
        if len(candidates) == 0:
            continue
        _, idx = NearestNeighbors(n_neighbors=1).fit(candidates).kneighbors(X[rows])
        out[rows] = candidates[idx[:, 0]]
        found[rows] = True
    return out, found


def log_density_function(density: Any) -> LogDensityFn:
    """Turn what a caller has into ``(images, classes) -> (n,) log-density``.

    Accepted: a callable ``f(X, classes)``; an object with ``log_density(X, classes)`` (a fitted
    ``explainers.deduce.DeDUCE``); or a pair ``(forward, density)`` of a feature extractor and a
    fitted ``explainers.density.ClassGaussianDensity`` (scored with
    ``explainers.deduce.feature_log_density``, which imports torch).
    """
    if hasattr(density, "log_density"):
        return density.log_density  # type: ignore[no-any-return]
    if isinstance(density, tuple) and len(density) == 2:
        forward, gaussians = density

        def score(X: NDArray, classes: NDArray) -> NDArray:
            from explainers.deduce import feature_log_density

            return feature_log_density(forward, gaussians, X, classes)

        return score
    if callable(density):
        return density  # type: ignore[no-any-return]
    raise TypeError(
        f"cannot score densities with a {type(density).__name__}; pass a callable "
        "f(images, classes) -> log-densities, a fitted DeDUCE, or (feature_forward, "
        "ClassGaussianDensity)"
    )


def target_log_density(
    counterfactuals: NDArray, targets: NDArray, density: Any
) -> NDArray[np.float64]:
    """DDU realism of image counterfactuals: the log-density of each counterfactual's network
    features under its target class's Gaussian (Mukhoti et al.; what DeDUCE optimises). Higher is
    better (more like real images of the target class). Values are O(1e3) and may be positive; compare
    them with real images' (the card's baseline), never exponentiate.

    Parameters
    ----------
    counterfactuals : (n, d) flattened images in model space.
    targets : (n,) target classes.
    density : see :func:`log_density_function`.

    Returns
    -------
    (n,) float.
    """
    fn = log_density_function(density)
    out = np.asarray(
        fn(np.asarray(counterfactuals, dtype=np.float32), np.asarray(targets)), dtype=np.float64
    )
    if out.shape != (len(counterfactuals),):
        raise ValueError(f"the density gave shape {out.shape} for {len(counterfactuals)} images")
    return out


def constraint_violations(
    X: NDArray,
    counterfactuals: NDArray,
    schema: FeatureSchema,
    *,
    pinned: Sequence[str] = (),
    bounds: dict[str, tuple[float | None, float | None]] | None = None,
    rel_tol: float = CHANGE_REL_TOL,
    pixel_tol: float = PIXEL_TOL,
) -> NDArray[np.int64]:
    """Broken constraints per counterfactual: pinned features changed plus continuous features
    outside their range. Lower is better (0 = every constraint kept).

    Parameters
    ----------
    X, counterfactuals : (n, d) model-space rows.
    schema : the data set's layout; its continuous ``lo``/``hi`` (model space) are the default
        ranges (the training range for the built-in data sets, [0, 1] for pixels).
    pinned : original feature names that may not change (a change is judged as in
        :func:`changed_units`).
    bounds : ``{feature: (lo, hi)}`` in original units, replacing the schema's range of that
        feature; None for an open side.

    Returns
    -------
    (n,) int: the number of broken constraints per row. ``.sum()`` is the total.
    """
    X, C = _pairs(X, counterfactuals, "counterfactuals")
    names = schema.original_names
    unknown = [p for p in pinned if p not in names]
    if unknown:
        raise ValueError(f"unknown pinned feature(s) {unknown}; the features are {names[:20]}")
    out = np.zeros(len(X), dtype=np.int64)
    if pinned:
        changed = changed_units(X, C, schema, rel_tol=rel_tol, pixel_tol=pixel_tol)
        out += changed[:, [names.index(p) for p in pinned]].sum(axis=1)
    lo, hi = (b.astype(np.float64) for b in schema.continuous_bounds())
    for name, (a, b) in (bounds or {}).items():
        if name not in names[: schema.n_continuous]:
            raise ValueError(
                f"a range is given for {name!r}, which is not a continuous feature; continuous "
                f"features: {names[: schema.n_continuous][:20]}"
            )
        j = names.index(name)
        f = schema.continuous[j]
        lo[j] = -np.inf if a is None else (a - f.mean) / f.std
        hi[j] = np.inf if b is None else (b - f.mean) / f.std
    k = schema.n_continuous
    outside = (C[:, :k] < lo - BOUND_TOL) | (C[:, :k] > hi + BOUND_TOL)
    return out + outside.sum(axis=1)


def seconds_per_counterfactual(seconds: float | None, n: int) -> float:
    """Wall-clock seconds the method took per counterfactual (explaining only, not fitting). Lower is
    better. NaN when the time is unknown or there are no rows."""
    if seconds is None or n <= 0 or not math.isfinite(seconds):
        return float("nan")
    return float(seconds) / n


# --------------------------------------------------------------------------- attributions
def removal_baseline(X_train: NDArray) -> NDArray[np.float64]:
    """The reference that removed features are moved to: the training mean in model space (for a
    one-hot block, the category frequencies; the block moves as one unit). IG's ``train_mean``
    baseline is the same point.

    Returns
    -------
    (d,) float.
    """
    X_train = np.asarray(X_train)
    if len(X_train) == 0:
        raise ValueError("no training rows to take the removal baseline (their mean) from")
    return np.asarray(X_train.mean(axis=0, dtype=np.float64))  # no float64 copy of the rows


def explained_classes(explanation: Explanation) -> NDArray[np.int64]:
    """The class whose probability an Explanation's attributions are about.

    The registry says it (``attributions_toward``): EMAP's negative perturbation ``-(x' - x)``
    points towards the black box's own class (away from the counterfactual's target), so its
    class is ``predictions``; LIME, SHAP and IG explain ``targets``. Unknown methods: ``targets``.
    """
    info = _method_info(explanation.method)
    toward = info.attributions_toward if info is not None else "target"
    return explanation.predictions if toward == "prediction" else explanation.targets


def _method_info(method: str) -> Any:
    from explainers.registry import METHODS, canonical_kind

    return METHODS.get(canonical_kind(method))


def attribution_kind(explanation: Explanation) -> AttributionKind:
    """``"slope"`` or ``"contribution"``: what the Explanation's attribution array holds.

    The registry says it (``attributions``). LIME with ``discretize_continuous`` gives the weight of
    "in the instance's bin", a contribution, whatever its entry says. Unknown methods are taken as
    contributions.
    """
    if explanation.params.get("discretize_continuous"):
        return "contribution"
    info = _method_info(explanation.method)
    kind = info.attributions if info is not None else None
    return kind or "contribution"


def contributions(
    attributions: NDArray, X: NDArray, baseline: NDArray, kind: AttributionKind
) -> NDArray[np.float64]:
    """Attributions as contributions to the explained probability relative to ``baseline``.

    A slope ``a_j`` becomes ``a_j * (x_j - b_j)``, the first-order change when column j moves from
    the baseline to the input (Gradient x Input); contributions are returned as they are.

    Parameters
    ----------
    attributions, X : (n, d); baseline : (d,); kind : ``"slope"`` or ``"contribution"``.

    Returns
    -------
    (n, d) float.
    """
    X, A = _pairs(X, attributions, "attributions")
    if kind == "contribution":
        return A
    if kind != "slope":
        raise ValueError(f"kind must be 'slope' or 'contribution', got {kind!r}")
    return A * (X - np.asarray(baseline, dtype=np.float64)[None, :])


def random_attributions(shape: tuple[int, int], seed: int = 0) -> NDArray[np.float64]:
    """The random baseline: standard-normal attributions of the given shape, from ``seed``."""
    return np.random.default_rng([seed, 17]).standard_normal(shape)


def removal_steps(n_units: int, max_steps: int | None = 20) -> NDArray[np.int64]:
    """How many features are removed at each point of a deletion/insertion curve: every count from
    0 to ``n_units``, or ``max_steps + 1`` evenly spaced counts when there are more units (pixels)."""
    if max_steps is None or n_units <= max_steps:
        return np.arange(n_units + 1, dtype=np.int64)
    return np.unique(np.rint(np.linspace(0, n_units, int(max_steps) + 1)).astype(np.int64))


@dataclass
class RemovalCurves:
    """Deletion and insertion curves of n rows.

    Attributes
    ----------
    fractions : (S,) share of features removed (deletion) or inserted (insertion), 0 to 1.
    deletion : (n, S) the explained class's probability with the top fractions replaced by the
        baseline.
    insertion : (n, S) the same probability starting from the baseline with the top fractions put
        back.
    """

    fractions: NDArray[np.float64]
    deletion: NDArray[np.float64]
    insertion: NDArray[np.float64]

    def deletion_auc(self) -> NDArray[np.float64]:
        """(n,) area under each deletion curve; lower is better (the probability drops fast)."""
        return curve_auc(self.fractions, self.deletion)

    def insertion_auc(self) -> NDArray[np.float64]:
        """(n,) area under each insertion curve; higher is better (the probability comes back fast)."""
        return curve_auc(self.fractions, self.insertion)


def curve_auc(fractions: NDArray, curves: NDArray) -> NDArray[np.float64]:
    """Trapezoidal area under each curve over x in [0, 1] (so areas compare across data sets).

    Parameters
    ----------
    fractions : (S,) increasing from 0 to 1; curves : (n, S).

    Returns
    -------
    (n,) float; NaN for a curve of fewer than 2 points.
    """
    x = np.asarray(fractions, dtype=np.float64)
    y = np.atleast_2d(np.asarray(curves, dtype=np.float64))
    if len(x) < 2:
        return np.full(len(y), np.nan)
    return np.asarray(np.trapezoid(y, x, axis=1), dtype=np.float64)


def _ranks(scores: NDArray) -> NDArray[np.int64]:
    """Rank of each unit per row, 0 = largest score (ties: the earlier unit first)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.empty_like(order)
    rows = np.arange(len(scores))[:, None]
    rank[rows, order] = np.arange(scores.shape[1])[None, :]
    return rank


def removal_curves(
    predict: PredictProba,
    X: NDArray,
    scores: NDArray,
    classes: NDArray,
    baseline: NDArray,
    owner: NDArray[np.int64],
    *,
    max_steps: int | None = 20,
    batch_rows: int = 20_000,
) -> RemovalCurves:
    """Deletion and insertion curves (Petsiuk et al.'s RISE metrics) in attribution order.

    Features (units) are ranked by ``scores``, largest first (most in favour of the explained
    class). Deletion replaces the top k units of the input by the baseline, insertion puts the top
    k units of the input into the baseline, for each k of :func:`removal_steps`; the curve is the
    black box's probability of ``classes``. All rows x steps go through the black box in calls of at
    most ``batch_rows`` rows.

    Parameters
    ----------
    predict : the black box's ``predict_proba``.
    X : (n, d) model-space rows; classes : (n,) the explained class of each row.
    scores : (n, U) per-unit ranking score (``unit_sums(contributions(...), owner)``).
    baseline : (d,) the removal baseline (:func:`removal_baseline`).
    owner : (d,) from :func:`feature_units`.

    Returns
    -------
    RemovalCurves with (n, S) curves, S = len(removal_steps(U, max_steps)).
    """
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    n, d = X.shape
    U = int(owner.max()) + 1 if len(owner) else 0
    if scores.shape != (n, U):
        raise ValueError(f"scores must be (rows, features) = ({n}, {U}), got {scores.shape}")
    base = np.asarray(baseline, dtype=np.float64)
    ks = removal_steps(U, max_steps)
    S = len(ks)
    col_rank = _ranks(scores)[:, owner]  # (n, d)
    deletion = np.empty((n, S))
    insertion = np.empty((n, S))
    per_chunk = max(1, batch_rows // (2 * S))
    for s in range(0, n, per_chunk):
        rows = slice(s, min(n, s + per_chunk))
        mask = col_rank[rows, None, :] < ks[None, :, None]  # (r, S, d)
        x = X[rows, None, :]
        deleted = np.where(mask, base, x).reshape(-1, d)
        inserted = np.where(mask, x, base).reshape(-1, d)
        p = _proba(predict, np.concatenate([deleted, inserted]), batch_rows)
        r = rows.stop - rows.start
        cls = np.repeat(np.asarray(classes)[rows], S)
        deletion[rows] = _pick(p[: r * S], cls).reshape(r, S)
        insertion[rows] = _pick(p[r * S :], cls).reshape(r, S)
    return RemovalCurves(ks / max(U, 1), deletion, insertion)


def prediction_gap(
    predict: PredictProba,
    X: NDArray,
    scores: NDArray,
    classes: NDArray,
    owner: NDArray[np.int64],
    X_ref: NDArray,
    *,
    fraction: float = 0.25,
    n_samples: int = 8,
    seed: int = 0,
    batch_rows: int = 20_000,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Prediction gap on important and on unimportant features (OpenXAI's PGI and PGU).

    The top (bottom) ``fraction`` of units by ``|score|`` are replaced by the values of a random
    reference row, ``n_samples`` times; the gap is the mean ``|p(x) - p(x~)|`` of the explained
    class. A faithful attribution has a large gap on its important features (higher is better) and
    a small one on its unimportant ones (lower is better).

    Parameters
    ----------
    predict : the black box's ``predict_proba``.
    X : (n, d) model-space rows; scores : (n, U) per-unit scores; classes : (n,).
    owner : (d,) from :func:`feature_units`.
    X_ref : (m, d) rows to draw replacement values from (a training sample).

    Returns
    -------
    (gap_important, gap_unimportant), each (n,).
    """
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    ref = np.asarray(X_ref, dtype=np.float64)
    if len(ref) == 0:
        raise ValueError("no reference rows to draw replacement values from")
    n, d = X.shape
    U = scores.shape[1]
    k = min(U, max(1, int(round(fraction * U))))
    col_rank = _ranks(np.abs(scores))[:, owner]
    top, bottom = col_rank < k, col_rank >= U - k
    rng = np.random.default_rng([seed, 23])
    donors = ref[rng.integers(len(ref), size=(n_samples, n))]  # (T, n, d)
    imp = np.where(top[None], donors, X[None]).reshape(-1, d)
    unimp = np.where(bottom[None], donors, X[None]).reshape(-1, d)
    p = _proba(predict, np.concatenate([X, imp, unimp]), batch_rows)
    cls = np.asarray(classes)
    p0 = _pick(p[:n], cls)
    cls_t = np.tile(cls, n_samples)
    p_imp = _pick(p[n : n + n_samples * n], cls_t).reshape(n_samples, n)
    p_unimp = _pick(p[n + n_samples * n :], cls_t).reshape(n_samples, n)
    return np.abs(p_imp - p0).mean(axis=0), np.abs(p_unimp - p0).mean(axis=0)


def gini_sparseness(
    attributions: NDArray, owner: NDArray[np.int64] | None = None
) -> NDArray[np.float64]:
    """Sparseness of each attribution: the Gini index of ``|a|`` over features (Chalasani et al.;
    Quantus' Sparseness). 0 = spread evenly, (U - 1) / U = all on one feature. Higher means a
    shorter story to read; it says nothing about faithfulness on its own.

    Parameters
    ----------
    attributions : (n, d); owner : (d,) units (a one-hot block's |a| is summed) or None.

    Returns
    -------
    (n,) float; NaN for an all-zero row.
    """
    A = np.abs(np.atleast_2d(np.asarray(attributions, dtype=np.float64)))
    v = np.sort(unit_sums(A, owner) if owner is not None else A, axis=1)
    U = v.shape[1]
    total = v.sum(axis=1)
    weights = 2 * np.arange(1, U + 1) - U - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        g = (v * weights).sum(axis=1) / (U * total)
    return np.where(total > 0, g, np.nan)


def sensitivity_max(
    attribute: AttributeFn,
    X: NDArray,
    classes: NDArray,
    *,
    radius: float = 0.02,
    n_perturb: int = 5,
    column_scale: NDArray | None = None,
    seed: int = 0,
) -> NDArray[np.float64]:
    """captum's ``sensitivity_max`` (Yeh et al. 2019): the largest relative change of the attributions
    under small input noise, ``max_delta ||a(x + delta) - a(x)|| / ||a(x)||``. Lower is better (a
    stable explanation); attributions drawn at random each call score well above 1 (about sqrt(2)
    in many dimensions, more in few).

    ``attribute`` is called twice: on the n rows, then on the n x ``n_perturb`` perturbed rows, so
    its cost bounds this one's; keep n small for slow methods (LIME, SHAP permutation).

    Parameters
    ----------
    attribute : ``(X (m, d), classes (m,)) -> (m, d)`` recomputing the method's attributions.
    X : (n, d) model-space rows; classes : (n,) explained classes.
    radius : half-width of the uniform noise, in model-space units times ``column_scale``.
    column_scale : (d,) per-column noise scale (0 keeps a column fixed, e.g. one-hot columns);
        default 1 everywhere.
    seed : the noise is drawn from a numpy generator seeded with it (reproducible).

    Returns
    -------
    (n,) float.
    """
    import torch
    from captum.metrics import sensitivity_max as captum_sensitivity_max

    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    n, d = X.shape
    scale = np.ones(d) if column_scale is None else np.asarray(column_scale, dtype=np.float64)
    rng = np.random.default_rng([seed, 31])

    def perturb(inputs: Any) -> Any:
        noise = rng.uniform(-radius, radius, size=tuple(inputs.shape)) * scale
        return inputs + torch.as_tensor(noise, dtype=inputs.dtype)

    def explain(inputs: Any, target: Any) -> Any:
        # captum passes a tuple of tensors for the rows themselves and expects a tuple back.
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        a = np.asarray(
            attribute(x.detach().cpu().numpy(), np.asarray(target.cpu())), dtype=np.float64
        )
        if a.shape != tuple(x.shape):
            raise ValueError(
                f"the attribution callable returned shape {a.shape} for rows {tuple(x.shape)}"
            )
        return (torch.as_tensor(a),) if isinstance(inputs, tuple) else torch.as_tensor(a)

    out = captum_sensitivity_max(
        explain,
        torch.as_tensor(X),
        perturb_func=perturb,
        n_perturb_samples=int(n_perturb),
        target=torch.as_tensor(np.asarray(classes, dtype=np.int64)),
    )
    return np.asarray(out.detach().cpu().numpy(), dtype=np.float64).reshape(n)


def infidelity(
    predict: PredictProba,
    X: NDArray,
    contribution: NDArray,
    classes: NDArray,
    baseline: NDArray,
    owner: NDArray[np.int64],
    *,
    n_perturb: int = 10,
    p_remove: float = 0.25,
    seed: int = 0,
    batch_rows: int = 20_000,
) -> NDArray[np.float64]:
    """captum's ``infidelity`` (Yeh et al. 2019) with subset-removal perturbations, normalised.

    Each perturbation removes a random subset of units (each with probability ``p_remove``) by
    moving them to the baseline; infidelity is the mean squared difference between the summed
    contributions of the removed units (scaled by the best single factor, captum's ``normalize``,
    so units do not matter) and the actual drop of the explained probability. Lower is better (0:
    the attribution predicts every removal exactly, as SHAP does for an additive model).

    Parameters
    ----------
    predict : the black box's ``predict_proba``.
    X : (n, d) model-space rows; contribution : (n, d) from :func:`contributions`.
    classes : (n,); baseline : (d,); owner : (d,) from :func:`feature_units`.

    Returns
    -------
    (n,) float, in squared probability units.
    """
    # The formula of captum.metrics.infidelity (normalize=True), in numpy: importing captum pulls
    # in matplotlib (seconds on a loaded machine), which a card must not add to every job.
    X, A = _pairs(X, contribution, "contributions")
    n, d = X.shape
    k = int(n_perturb)
    base = np.asarray(baseline, dtype=np.float64)
    U = int(owner.max()) + 1 if len(owner) else 0
    rng = np.random.default_rng([seed, 37])
    # Rows repeated k times each (row i's perturbations together), as captum expands them.
    X_rep = np.repeat(X, k, axis=0)
    cls_rep = np.repeat(np.asarray(classes, dtype=np.int64), k)
    mask = (rng.random((n * k, U)) < p_remove)[:, owner].astype(np.float64)
    perturbed = X_rep - mask * (X_rep - base)
    p_x = _pick(_proba(predict, X, batch_rows), np.asarray(classes, dtype=np.int64))
    p_pert = _pick(_proba(predict, perturbed, batch_rows), cls_rep)
    fwd_diff = (np.repeat(p_x, k) - p_pert).reshape(n, k)
    attr_sum = (np.repeat(A, k, axis=0) * mask).sum(axis=1).reshape(n, k)
    num = (attr_sum * fwd_diff).mean(axis=1)
    den = (attr_sum * attr_sum).mean(axis=1)
    beta = np.divide(num, den, out=np.zeros(n), where=den != 0)
    return np.asarray(((beta[:, None] * attr_sum - fwd_diff) ** 2).mean(axis=1), dtype=np.float64)


def zero_attribution_share(attributions: NDArray, rel_tol: float = ZERO_REL_TOL) -> float:
    """Share of rows whose attributions are numerically zero: ``max_j |a_j| < rel_tol * scale``, with
    ``scale = max(1, 99th percentile of the rows' max |a|)`` (probability units put it at 1e-6).
    Lower is better; IG on a saturated probability gives ~1e-9 on such rows.

    Parameters
    ----------
    attributions : (n, d).
    """
    A = np.abs(np.atleast_2d(np.asarray(attributions, dtype=np.float64)))
    if A.size == 0:
        return float("nan")
    row_max = A.max(axis=1)
    scale = max(1.0, float(np.percentile(row_max, 99)))
    return float(np.mean(row_max < rel_tol * scale))


def saturated_share(probability: NDArray, tol: float = SATURATION_TOL) -> float:
    """Share of rows whose explained probability is within ``tol`` of 0 or 1: there a probability's
    gradient vanishes, so gradient methods on probabilities (IG) give ~0. Lower is better.

    Parameters
    ----------
    probability : (n,) the explained class's probability per row.
    """
    p = np.asarray(probability, dtype=np.float64).ravel()
    if len(p) == 0:
        return float("nan")
    return float(np.mean((p < tol) | (p > 1.0 - tol)))


def beats_baseline(
    method_rows: NDArray, baseline_rows: NDArray, better: Better, z: float = 2.0
) -> bool:
    """Whether a method's per-row figure beats the baseline's by more than ``z`` standard errors of
    the paired mean difference (a one-sided test at about 2.3% for z = 2)."""
    a = np.asarray(method_rows, dtype=np.float64)
    b = np.asarray(baseline_rows, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    diff = (a - b)[ok] if better == "higher" else (b - a)[ok]
    if len(diff) == 0:
        return False
    se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return float(diff.mean()) > z * se and float(diff.mean()) > 0


# --------------------------------------------------------------------------- uncertainty triage
def confidence_margin(proba: NDArray) -> NDArray[np.float64]:
    """Top-1 minus top-2 probability per row (the model's own confidence; small = uncertain).

    Parameters
    ----------
    proba : (n, C) class probabilities, C >= 2.
    """
    p = np.sort(np.atleast_2d(np.asarray(proba, dtype=np.float64)), axis=1)
    if p.shape[1] < 2:
        raise ValueError("the confidence margin needs at least two classes")
    return p[:, -1] - p[:, -2]


def triage(uncertainty: NDArray, errors: NDArray, *, k_pct: float = 10.0) -> dict[str, float]:
    """How well an uncertainty score picks out the black box's errors.

    Parameters
    ----------
    uncertainty : (n,) higher = more suspicious (pass ``100 - norm_percentile`` for EMAP,
        ``1 - margin`` for the confidence margin, ``-log density`` for DDU).
    errors : (n,) bool, whether the black box got each labelled row wrong.
    k_pct : share of rows flagged for the precision, in percent (the triage view's default, 10).

    Returns
    -------
    ``auroc`` (chance 0.5, higher is better; NaN when all rows are errors or none is),
    ``precision_at_k`` (errors among the ``k`` most suspicious rows; chance = ``error_rate``;
    higher is better), ``k`` and ``error_rate``.
    """
    s = np.asarray(uncertainty, dtype=np.float64).ravel()
    err = np.asarray(errors, dtype=bool).ravel()
    if s.shape != err.shape:
        raise ValueError(f"{len(s)} scores but {len(err)} error flags")
    n = len(s)
    s = np.where(np.isnan(s), -np.inf, s)
    if n == 0 or err.all() or not err.any():
        auroc = float("nan")
    else:
        from sklearn.metrics import roc_auc_score

        auroc = float(roc_auc_score(err, s))
    k = min(n, max(1, int(math.ceil(k_pct / 100.0 * n - 1e-9)))) if n else 0
    top = np.argsort(-s, kind="stable")[:k]
    return {
        "auroc": auroc,
        "precision_at_k": float(err[top].mean()) if k else float("nan"),
        "k": float(k),
        "error_rate": float(err.mean()) if n else float("nan"),
    }


def labels_for_rows(X: NDArray, dataset: Dataset) -> NDArray[np.int64]:
    """The true label of each row found (exactly, as float32) in the data set's test or training
    split; -1 where a row is in neither (an edited or uploaded row)."""
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    out = np.full(len(X), -1, dtype=np.int64)
    n = min(len(X), len(dataset.X_test))
    if n and np.array_equal(X[:n], np.asarray(dataset.X_test[:n], dtype=np.float32)):
        out[:n] = dataset.y_test[:n]  # the jobs explain the first rows of the test split
        if n == len(X):
            return out
    for Xs, ys in ((dataset.X_train, dataset.y_train), (dataset.X_test, dataset.y_test)):
        lookup = {
            row.tobytes(): int(y)
            for row, y in zip(
                np.ascontiguousarray(np.asarray(Xs, dtype=np.float32)), ys, strict=True
            )
        }
        for i in np.flatnonzero(out < 0):
            out[i] = lookup.get(X[i].tobytes(), -1)
    return out


# --------------------------------------------------------------------------- sanity flags
def _flag(metric: str, level: str, message: str) -> dict[str, str]:
    return {"metric": metric, "level": level, "message": message}


def sanity_flags(
    *,
    method: str,
    params: dict[str, Any] | None = None,
    zero_share: float | None = None,
    saturated: float | None = None,
    beats_random: dict[str, bool] | None = None,
    validity: float | None = None,
    surrogate_fidelity: float | None = None,
) -> list[dict[str, str]]:
    """Warnings a reader must see next to the figures they concern.

    Parameters
    ----------
    method, params : the Explanation's method name and parameters (IG's ``output`` picks advice).
    zero_share : :func:`zero_attribution_share`; flagged above 1% of rows.
    saturated : :func:`saturated_share` of the explained probability; flagged above half the rows
        for IG on probabilities (its gradients vanish there), and named in the zero flag otherwise.
    beats_random : ``{"deletion_auc": bool, "insertion_auc": bool}`` from :func:`beats_baseline`.
    validity : share of valid counterfactuals; flagged below 0.9.
    surrogate_fidelity : share of rows where a surrogate agrees with the black box; flagged below 0.9.

    Returns
    -------
    list of ``{"metric", "level", "message"}``; level is ``"warning"``.
    """
    params = params or {}
    flags: list[dict[str, str]] = []
    # a gradient method run on the probability output (its ``output`` parameter) saturates
    ig_on_probability = params.get("output") == "probability"
    sat = saturated if saturated is not None and math.isfinite(saturated) else 0.0
    if zero_share is not None and math.isfinite(zero_share) and zero_share > ZERO_SHARE_LIMIT:
        why = (
            f" The explained probability is saturated (within {SATURATION_TOL:g} of 0 or 1) on "
            f"{sat:.0%} of rows."
            if sat > ZERO_SHARE_LIMIT
            else ""
        )
        advice = (
            " Rerun Integrated Gradients with output=logit."
            if ig_on_probability
            else " Do not read these rows' attributions, nor agreement figures that include them."
        )
        flags.append(
            _flag(
                "attributions",
                "warning",
                f"{zero_share:.0%} of rows have numerically zero attributions "
                f"(|a| < {ZERO_REL_TOL:g}).{why}{advice}",
            )
        )
    if ig_on_probability and sat > SATURATED_SHARE_LIMIT:
        flags.append(
            _flag(
                "attributions",
                "warning",
                f"the explained probability is within {SATURATION_TOL:g} of 0 or 1 on {sat:.0%} of "
                "rows: gradients of a saturated probability vanish, so IG gives ~0 there. Rerun "
                "Integrated Gradients with output=logit (it then explains the logit).",
            )
        )
    for name, ok in (beats_random or {}).items():
        if not ok:
            flags.append(
                _flag(
                    name,
                    "warning",
                    f"{method} does not beat a random feature order on {name} (by two standard "
                    "errors): on these rows its ranking of features is no better than chance.",
                )
            )
    if validity is not None and math.isfinite(validity) and validity < MIN_VALIDITY:
        flags.append(
            _flag(
                "validity",
                "warning",
                f"only {validity:.1%} of the counterfactuals reach their target class on the black "
                f"box (below {MIN_VALIDITY:.0%}); read the others as failed, and train longer or "
                "lower the distance penalty.",
            )
        )
    if (
        surrogate_fidelity is not None
        and math.isfinite(surrogate_fidelity)
        and surrogate_fidelity < MIN_SURROGATE_FIDELITY
    ):
        flags.append(
            _flag(
                "surrogate_fidelity",
                "warning",
                f"the surrogate agrees with the black box on {surrogate_fidelity:.1%} of rows "
                f"(below {MIN_SURROGATE_FIDELITY:.0%}): what is explained is partly the surrogate, "
                "not the black box. Train the surrogate longer or wider.",
            )
        )
    return flags


def attribute_fn(explainer: Any, seconds_per_row: float) -> AttributeFn | None:
    """An ``AttributeFn`` recomputing a fitted method's attributions on perturbed rows (for
    ``sensitivity_max``), or None for a method too slow to be called on every perturbation
    (above 0.02 s per row: the card asks for about a hundred rows), which leaves that figure out.
    """
    if seconds_per_row > 0.02:
        return None

    def attribute(Z: NDArray, classes: NDArray) -> NDArray:
        rows = np.asarray(Z, dtype=np.float32)
        out = explainer.explain(rows, targets=np.asarray(classes, dtype=np.int64)).attributions
        return np.asarray(out)

    return attribute


# --------------------------------------------------------------------------- the card
@dataclass(frozen=True)
class CardBudget:
    """Bounds that keep the card cheap (it should add at most about 20% to a job).

    Attributes
    ----------
    max_rows, max_image_rows : rows scored (a seeded sample when the run has more).
    max_steps : points of a deletion/insertion curve beyond which features are grouped.
    reference_rows : training rows for yNN, the LOF fit (quadratic in them: 1000 rows of Adult take
        0.25 s) and prediction-gap replacements.
    pool_rows : further training rows searched for the nearest real example (the baseline).
    k_neighbours, lof_neighbours : yNN's k and LOF's neighbourhood.
    gap_fraction, gap_samples : prediction gap's share of features and replacement draws.
    infidelity_rows, infidelity_samples : rows and perturbations per row for infidelity.
    robust_rows, robust_samples, robust_radius : rows, perturbations and noise for sensitivity_max
        (each perturbation costs one call of the attribution callable per row).
    triage_k_pct : share of rows flagged for triage precision.
    batch_rows : rows per black-box call.
    """

    max_rows: int = 500
    max_image_rows: int = 100
    max_steps: int = 20
    reference_rows: int = 1000
    pool_rows: int = 3000
    k_neighbours: int = 5
    lof_neighbours: int = 20
    gap_fraction: float = 0.25
    gap_samples: int = 8
    infidelity_rows: int = 100
    infidelity_samples: int = 10
    robust_rows: int = 16
    robust_samples: int = 5
    robust_radius: float = 0.02
    triage_k_pct: float = 10.0
    batch_rows: int = 20_000


# name -> (section, better, how to read it)
METRIC_INFO: dict[str, tuple[str, Better, str]] = {
    "validity": (
        "counterfactual",
        "higher",
        "share of counterfactuals the black box puts in the target class",
    ),
    "proximity_l1": (
        "counterfactual",
        "lower",
        "mean L1 change in model space (z-scores; pixel intensities), over valid counterfactuals; baseline: the nearest real row of the target class",
    ),
    "proximity_l2": (
        "counterfactual",
        "lower",
        "mean Euclidean change in model space, over valid counterfactuals; baseline: the nearest real row of the target class",
    ),
    "proximity_mad_l1": (
        "counterfactual",
        "lower",
        "mean change summed over features in units of each feature's median absolute deviation (a changed category counts 1), over valid counterfactuals",
    ),
    "sparsity": (
        "counterfactual",
        "lower",
        "mean number of features (pixels) changed, over valid counterfactuals; baseline: the nearest real row of the target class",
    ),
    "ynn": (
        "counterfactual",
        "higher",
        "share of each counterfactual's nearest training rows that the black box puts in the target class (1 = inside the target's region)",
    ),
    "lof_inlier_rate": (
        "counterfactual",
        "higher",
        "share of counterfactuals a local outlier factor fitted on training rows calls inliers (low = off the data)",
    ),
    "target_log_density": (
        "counterfactual",
        "higher",
        "median DDU log-density of the counterfactuals under the target class; baseline: the real inputs under their own class",
    ),
    "constraint_violation_rate": (
        "counterfactual",
        "lower",
        "share of counterfactuals that change a pinned feature or leave a feature's range",
    ),
    "constraint_violations": (
        "counterfactual",
        "lower",
        "number of broken constraints (pinned features changed, values out of range) over the rows scored",
    ),
    "recourse_violations": (
        "counterfactual",
        "lower",
        "valid counterfactuals that break one of the run's own constraints (immutable features, "
        "directions, ranges, allowed categories, most features changed); must be 0",
    ),
    "diversity_distinct_feature_sets": (
        "counterfactual",
        "higher",
        "runs with several options per row: mean number of distinct sets of changed features "
        "among a row's valid options (over the run's rows)",
    ),
    "diversity_mean_pairwise_distance": (
        "counterfactual",
        "higher",
        "runs with several options per row: mean L2 distance (model space) between a row's valid "
        "options (over the run's rows with two or more)",
    ),
    "seconds_per_counterfactual": (
        "counterfactual",
        "lower",
        "seconds the method took per counterfactual (explaining only, not fitting)",
    ),
    "deletion_auc": (
        "attribution",
        "lower",
        "area under the explained probability as features are moved to the training mean, most important first (x in [0, 1]); baseline: a random order",
    ),
    "insertion_auc": (
        "attribution",
        "higher",
        "area under the explained probability as features are put back into the training mean, most important first; baseline: a random order",
    ),
    "prediction_gap_important": (
        "attribution",
        "higher",
        "mean change of the explained probability when the top quarter of features is replaced by another row's values; baseline: a random quarter",
    ),
    "prediction_gap_unimportant": (
        "attribution",
        "lower",
        "the same for the bottom quarter of features; baseline: a random quarter",
    ),
    "sensitivity_max": (
        "attribution",
        "lower",
        "largest relative change of the attributions under small input noise (captum); baseline: fresh random attributions",
    ),
    "infidelity": (
        "attribution",
        "lower",
        "squared error between summed attributions of randomly removed features and the actual change of the probability (captum, scale-free); baseline: random attributions",
    ),
    "sparseness": (
        "attribution",
        "higher",
        "Gini index of |attribution| (0 = spread evenly, near 1 = one feature); a reading aid, not faithfulness",
    ),
    "zero_attribution_share": (
        "attribution",
        "lower",
        "share of rows whose attributions are numerically zero (nothing to read there)",
    ),
    "triage_auroc": (
        "triage",
        "higher",
        "AUROC of a small perturbation as a detector of the black box's errors (0.5 = chance); baseline: the confidence margin",
    ),
    "triage_precision_at_k": (
        "triage",
        "higher",
        "share of errors among the k% (default 10%) rows with the smallest perturbations; baseline: the same for the confidence margin",
    ),
    "triage_auroc_density": (
        "triage",
        "higher",
        "AUROC of a low DDU density as a detector of the black box's errors; baseline: the confidence margin",
    ),
    "triage_auroc_confidence": (
        "triage",
        "higher",
        "AUROC of a small confidence margin (top-1 minus top-2 probability) as an error detector: what any uncertainty score must beat",
    ),
}


def _num(value: Any) -> float | None:
    """A finite Python float, or None (JSON has no NaN)."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _mean(values: NDArray) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def _pinned(explanation: Explanation, pinned: Sequence[str] | None) -> list[str]:
    if pinned is not None:
        return list(pinned)
    value = explanation.params.get("pinned") or ()
    return [value] if isinstance(value, str) else list(value)


def _run_constraints(exp: Explanation, schema: FeatureSchema) -> Recourse | None:
    """The recourse constraints a run was made with (``explainers.constraints``), or None when it
    states none beyond pinning (scored by ``constraint_violations``) or they no longer fit."""
    p = exp.params
    if not any(p.get(k) for k in ("directions", "ranges", "categories", "max_changed")):
        return None
    try:
        return Constraints.from_params(
            tuple(p.get("pinned") or ()), p.get("directions") or "", p.get("ranges") or "",
            p.get("categories") or "", int(p.get("max_changed") or 0),
        ).compile(schema)  # fmt: skip
    except (ConstraintError, TypeError, ValueError):
        return None


def quality_card(
    explanation: Explanation,
    dataset: Dataset,
    model: Model,
    *,
    density: Any = None,
    attribute: AttributeFn | None = None,
    labels: NDArray | None = None,
    pinned: Sequence[str] | None = None,
    bounds: dict[str, tuple[float | None, float | None]] | None = None,
    seed: int = 0,
    budget: CardBudget | None = None,
) -> dict[str, Any]:
    """The quality report card of one run, as plain JSON data.

    Parameters
    ----------
    explanation : the run's result; counterfactual and attribution figures are computed for what it
        holds (EMAP gets both, plus triage).
    dataset : the data set the run was made on (training rows for baselines and plausibility).
    model : the black box (``predict_proba``); every figure is judged on it.
    density : for images, what :func:`log_density_function` accepts (DDU realism and triage).
    attribute : ``(X, classes) -> attributions`` recomputing the method's attributions, for
        ``sensitivity_max``; without it that figure is left out.
    labels : (n,) true labels of the explained rows for triage; default: looked up in the data set
        (:func:`labels_for_rows`).
    pinned, bounds : constraints (default: the run's ``params["pinned"]`` and the schema's ranges).
    seed : seeds the row sample, the random baseline and every perturbation (same seed, same card).
    budget : row and step bounds (default ``CardBudget()``).

    Returns
    -------
    ``{"kind", "method", "sections", "rows", "rows_total", "seed", "context", "metrics", "flags",
    "seconds"}``; ``metrics[NAME] = {"value", "baseline", "baseline_kind", "better", "help",
    "section"}`` with None for a figure that cannot be computed; ``flags`` from
    :func:`sanity_flags`; ``seconds`` is the time the card took (the only non-deterministic field).
    """
    t0 = time.perf_counter()
    budget = budget or CardBudget()
    if explanation.n == 0:
        raise ValueError("the run explains no rows, so there is nothing to score; run it on rows")
    X_all = np.asarray(explanation.inputs, dtype=np.float64)
    schema = dataset.schema
    owner = feature_units(schema, X_all.shape[1])
    image = schema.image_shape is not None or explanation.modality == "image"
    cap = budget.max_image_rows if image else budget.max_rows
    rng = np.random.default_rng([seed, 1])
    n_total = explanation.n
    rows = (
        np.arange(n_total) if n_total <= cap else np.sort(rng.choice(n_total, cap, replace=False))
    )
    exp = explanation if len(rows) == n_total else explanation.subset(rows)
    X = np.asarray(exp.inputs, dtype=np.float64)
    n = len(X)
    predict = model.predict_proba
    metrics: dict[str, dict[str, Any]] = {}
    flags: list[dict[str, str]] = []
    sections: list[str] = []
    context: dict[str, Any] = {}

    def put(name: str, value: Any, baseline: Any = None, baseline_kind: str | None = None) -> None:
        section, better, help_text = METRIC_INFO[name]
        base = _num(baseline)
        metrics[name] = {
            "value": _num(value),
            "baseline": base,
            "baseline_kind": baseline_kind if base is not None else None,
            "better": better,
            "help": help_text,
            "section": section,
        }

    proba_x = _proba(predict, X, budget.batch_rows)
    train = np.asarray(
        dataset.X_train
    )  # samples are taken before any float64 copy (MNIST: 60k rows)
    # Disjoint training samples: a reference for yNN/LOF/gap and a pool for the nearest real example.
    perm = np.random.default_rng([seed, 2]).permutation(len(train))
    ref_idx = perm[: budget.reference_rows]
    pool_idx = perm[budget.reference_rows : budget.reference_rows + budget.pool_rows]
    X_ref = np.asarray(train[ref_idx], dtype=np.float64)
    X_pool = np.asarray(train[pool_idx], dtype=np.float64)
    baseline = removal_baseline(train)

    if exp.counterfactuals is not None:
        sections.append("counterfactual")
        C = np.asarray(exp.counterfactuals, dtype=np.float64)
        targets = exp.targets
        if not image:
            both = _proba(predict, np.concatenate([C, X_ref, X_pool]), budget.batch_rows)
            cf_pred = both[:n].argmax(axis=1)
            ref_classes = both[n : n + len(ref_idx)].argmax(axis=1)
            pool_classes = both[n + len(ref_idx) :].argmax(axis=1)
        else:
            cf_pred = _proba(predict, C, budget.batch_rows).argmax(axis=1)
        valid = cf_pred == targets
        val = flip_rate(cf_pred, exp.predictions, targets)
        put("validity", val)
        flags += sanity_flags(method=exp.method, validity=val)
        nearest = found = None
        if not image and len(pool_idx):
            nearest, found = nearest_real_examples(X, targets, X_pool, pool_classes)
        ok_nn = found if found is not None else np.zeros(n, dtype=bool)

        def cf_figure(name: str, values: NDArray, base_values: NDArray | None) -> None:
            b = _mean(base_values[ok_nn]) if base_values is not None and ok_nn.any() else None
            put(name, _mean(values[valid]) if valid.any() else None, b, "nearest real example")

        cf_figure(
            "proximity_l1",
            proximity_l1(X, C),
            None if nearest is None else proximity_l1(X, nearest),
        )
        cf_figure(
            "proximity_l2",
            proximity_l2(X, C),
            None if nearest is None else proximity_l2(X, nearest),
        )
        if not image:
            scales = mad_scales(train, schema)
            cf_figure(
                "proximity_mad_l1",
                proximity_mad_l1(X, C, schema, scales),
                None if nearest is None else proximity_mad_l1(X, nearest, schema, scales),
            )
        cf_figure(
            "sparsity",
            sparsity(X, C, schema),
            None if nearest is None else sparsity(X, nearest, schema).astype(np.float64),
        )
        if not image:
            cf_figure(
                "ynn",
                ynn(C, targets, X_ref, ref_classes, k=budget.k_neighbours),
                None
                if nearest is None
                else ynn(nearest, targets, X_ref, ref_classes, k=budget.k_neighbours),
            )
            inl = lof_inliers(
                C if nearest is None else np.concatenate([C, nearest]),
                X_ref,
                n_neighbors=budget.lof_neighbours,
            ).astype(np.float64)
            cf_figure("lof_inlier_rate", inl[:n], None if nearest is None else inl[n:])
        else:
            dens_cf = exp.diagnostics.get("target_log_density")
            dens_x = exp.diagnostics.get("original_log_density")
            if density is not None:
                dens_cf = (
                    dens_cf if dens_cf is not None else target_log_density(C, targets, density)
                )
                dens_x = (
                    dens_x
                    if dens_x is not None
                    else target_log_density(X, exp.predictions, density)
                )
            if dens_cf is not None:
                put(
                    "target_log_density",
                    float(np.median(dens_cf)),
                    None if dens_x is None else float(np.median(dens_x)),
                    "real inputs",
                )
        pins = _pinned(exp, pinned)
        violations = constraint_violations(X, C, schema, pinned=pins, bounds=bounds)
        put("constraint_violation_rate", float(np.mean(violations > 0)) if n else None)
        put("constraint_violations", int(violations.sum()))
        context["pinned"] = pins
        recourse = _run_constraints(exp, schema)
        if recourse is not None:
            shown = valid if exp.success is None else valid & np.asarray(exp.success, dtype=bool)
            broken = recourse.violations(X[shown], C[shown]) != ""
            put("recourse_violations", int(broken.sum()))
        for key in ("diversity_distinct_feature_sets", "diversity_mean_pairwise_distance"):
            if exp.metrics.get(key) is not None:
                put(key, exp.metrics[key])
        put(
            "seconds_per_counterfactual",
            seconds_per_counterfactual(exp.provenance.seconds, n_total),
        )

    if exp.attributions is not None:
        sections.append("attribution")
        A = np.asarray(exp.attributions, dtype=np.float64)
        classes = explained_classes(exp)
        attr_kind = attribution_kind(exp)
        context.update(
            explained_class=(
                "the black box's class" if classes is exp.predictions else "the run's target"
            ),
            attribution_kind=attr_kind,
            removal_baseline="training mean (model space; one-hot blocks move as a unit)",
        )
        R = random_attributions(A.shape, seed)
        contrib = contributions(A, X, baseline, attr_kind)
        scores = unit_sums(contrib, owner)
        random_scores = unit_sums(R, owner)
        # One call for the method and the random order together.
        curves = removal_curves(
            predict,
            np.concatenate([X, X]),
            np.concatenate([scores, random_scores]),
            np.concatenate([classes, classes]),
            baseline,
            owner,
            max_steps=budget.max_steps,
            batch_rows=budget.batch_rows,
        )
        dele, ins = curves.deletion_auc(), curves.insertion_auc()
        put("deletion_auc", _mean(dele[:n]), _mean(dele[n:]), "random")
        put("insertion_auc", _mean(ins[:n]), _mean(ins[n:]), "random")
        context["curve_points"] = len(curves.fractions)
        beats = {
            "deletion_auc": beats_baseline(dele[:n], dele[n:], "lower"),
            "insertion_auc": beats_baseline(ins[:n], ins[n:], "higher"),
        }
        gap_imp, gap_unimp = prediction_gap(
            predict,
            np.concatenate([X, X]),
            np.concatenate([scores, random_scores]),
            np.concatenate([classes, classes]),
            owner,
            X_ref,
            fraction=budget.gap_fraction,
            n_samples=budget.gap_samples,
            seed=seed,
            batch_rows=budget.batch_rows,
        )
        put("prediction_gap_important", _mean(gap_imp[:n]), _mean(gap_imp[n:]), "random")
        put("prediction_gap_unimportant", _mean(gap_unimp[:n]), _mean(gap_unimp[n:]), "random")
        m = min(n, budget.infidelity_rows)
        inf = infidelity(
            predict,
            np.concatenate([X[:m], X[:m]]),
            np.concatenate([contrib[:m], R[:m]]),
            np.concatenate([classes[:m], classes[:m]]),
            baseline,
            owner,
            n_perturb=budget.infidelity_samples,
            seed=seed,
            batch_rows=budget.batch_rows,
        )
        put("infidelity", _mean(inf[:m]), _mean(inf[m:]), "random")
        if attribute is not None:
            r = min(n, budget.robust_rows)
            scale = np.zeros(X.shape[1])
            scale[: schema.n_continuous] = 1.0  # noise on continuous columns; categories stay valid
            random_rng = np.random.default_rng([seed, 41])

            def random_attribute(Z: NDArray, _classes: NDArray) -> NDArray:
                return random_rng.standard_normal(np.shape(Z))

            sens = [
                sensitivity_max(
                    fn,
                    X[:r],
                    classes[:r],
                    radius=budget.robust_radius,
                    n_perturb=budget.robust_samples,
                    column_scale=scale,
                    seed=seed,
                )
                for fn in (attribute, random_attribute)
            ]
            put("sensitivity_max", _mean(sens[0]), _mean(sens[1]), "random")
        put(
            "sparseness",
            _mean(gini_sparseness(A, owner)),
            _mean(gini_sparseness(R, owner)),
            "random",
        )
        zero = zero_attribution_share(A)
        put("zero_attribution_share", zero)
        out = exp.diagnostics.get("model_output")
        p_explained = (
            np.asarray(out, dtype=np.float64)
            if out is not None and exp.params.get("output", "probability") == "probability"
            else _pick(proba_x, classes)
        )
        flags += sanity_flags(
            method=exp.method,
            params=exp.params,
            zero_share=zero,
            saturated=saturated_share(p_explained),
            beats_random=beats,
        )

    fidelity = exp.metrics.get("surrogate_fidelity", exp.metrics.get("surrogate_agreement"))
    if fidelity is not None:
        flags += sanity_flags(method=exp.method, surrogate_fidelity=float(fidelity))

    percentile = exp.diagnostics.get("norm_percentile")
    dens_own = exp.diagnostics.get("original_log_density") if image else None
    if image and dens_own is None and density is not None:
        dens_own = target_log_density(X, exp.predictions, density)
    if percentile is not None or dens_own is not None:
        y = (labels_for_rows(X_all, dataset) if labels is None else np.asarray(labels))[rows]
        known = y >= 0
        errors = exp.predictions[known] != y[known]
        context["triage_rows"] = int(known.sum())
        context["triage_errors"] = int(errors.sum())
        if known.any():
            sections.append("triage")
            k_pct = budget.triage_k_pct
            conf = triage(1.0 - confidence_margin(proba_x[known]), errors, k_pct=k_pct)
            put("triage_auroc_confidence", conf["auroc"])
            if percentile is not None:
                t = triage(100.0 - np.asarray(percentile)[known], errors, k_pct=k_pct)
                put("triage_auroc", t["auroc"], conf["auroc"], "confidence margin")
                put(
                    "triage_precision_at_k",
                    t["precision_at_k"],
                    conf["precision_at_k"],
                    "confidence margin",
                )
            if dens_own is not None:
                t = triage(-np.asarray(dens_own, dtype=np.float64)[known], errors, k_pct=k_pct)
                put("triage_auroc_density", t["auroc"], conf["auroc"], "confidence margin")

    kind = "counterfactual" if exp.counterfactuals is not None else "attribution"
    if not sections:
        kind = "none"
    return {
        "kind": kind,
        "method": exp.method,
        "sections": sections,
        "rows": int(n),
        "rows_total": int(n_total),
        "seed": int(seed),
        "budget": asdict(budget),
        "context": context,
        "metrics": metrics,
        "flags": flags,
        "seconds": time.perf_counter() - t0,
    }
