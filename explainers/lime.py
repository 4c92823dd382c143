"""LIME through the ``lime`` package, returning the common ``Explanation``.

Ribeiro, Singh and Guestrin (2016), "Why Should I Trust You?": Explaining the Predictions of Any
Classifier, KDD. Each instance gets its own weighted ridge model, fitted on perturbed samples
around it and the black box's probability of the target class on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datasets.base import Dataset, FeatureSchema
from explainers.attribution_common import (
    categorical_codes,
    feature_view,
    model_space,
    spread_to_columns,
)
from explainers.base import (
    Explainer,
    ProgressFn,
    Query,
    Result,
    StopFn,
    check_cancel,
    over_limit,
    param,
    report,
)
from explainers.models import Model

# Samples x features of one instance's perturbation table: lime holds about six float64 copies of
# it at once (measured: 40,000 samples x 784 features, 1.46 GB at peak), so 2**25 values stay
# near 1.6 GB.
MAX_SAMPLE_VALUES = 2**25


@dataclass(frozen=True)
class LimeParams:
    num_samples: int = param(
        5000, "perturbed samples per instance (lime's num_samples)", lo=50, hi=100_000
    )
    kernel_width: float = param(
        0.0,
        "width of lime's exponential kernel on standardised distances; 0 = lime's default, "
        "0.75 * sqrt(number of features)",
        lo=0.0,
        hi=1e4,
    )
    discretize_continuous: bool = param(
        False,
        "bin continuous features (lime's default is on); off keeps one slope per feature, which is "
        "what a comparison of directions needs",
    )
    discretizer: str = param(
        "quartile",
        "bins used when discretize_continuous is on",
        choices=("quartile", "decile"),
        advanced=True,
    )
    sample_around_instance: bool = param(
        True,
        "draw continuous samples around the instance (on) or around the training mean (lime's "
        "default, off); on keeps the fit local when discretisation is off",
    )
    num_features: int = param(
        0, "features kept in each local model; 0 = all of them", lo=0, hi=100_000
    )
    feature_selection: str = param(
        "auto",
        "how lime picks num_features features (auto: all when num_features is 0)",
        choices=("auto", "none", "highest_weights", "forward_selection", "lasso_path"),
        advanced=True,
    )
    seed: int = param(0, "random seed of the perturbation sampler", lo=0, hi=2**31 - 1)


class Lime(Explainer[LimeParams]):
    """LIME (Ribeiro et al., KDD 2016) over ``lime.lime_tabular.LimeTabularExplainer``.

    What is explained
        The black box's probability of the target class (default: its predicted class). Each
        instance gets a ridge model fitted by lime on ``num_samples`` perturbed samples weighted by
        an exponential kernel of their standardised distance to the instance.

    Features
        Sampling happens in the *feature view*: continuous features in model space (standardised),
        each categorical feature as one categorical column, so every sample the black box sees has
        exactly one category per one-hot block (lime samples categories by their training
        frequencies; its binary regressor is "equals the instance's category").

    Images
        Per pixel: every pixel is one continuous feature of the tabular explainer, not lime's image
        explainer. Why: the other methods here (EMAP's perturbation, SHAP, IG) give one signed value
        per pixel, and agreement (cosine, Spearman, sign, top-k) needs the same granularity; lime's
        image explainer scores superpixels by hiding them, which on a 28x28 digit gives a handful of
        segments and a presence/absence effect rather than a direction in pixel space. Samples are
        Gaussian with each pixel's training standard deviation and are not clipped to [0, 1].

    Returned arrays (n instances, d model-space columns)
        attributions : (n, d) the local slopes towards ``targets``. With ``discretize_continuous``
            off (default) a continuous column's value is lime's coefficient divided by the
            feature's training standard deviation, i.e. change of the target probability per model-
            space unit, so it is comparable with a perturbation in model space. With it on, the
            value is the weight of "in the instance's bin" (not a direction). A categorical
            feature's weight ("has the instance's category") sits on the active column of its
            block, the rest of the block is 0: read a block by its sum.
        diagnostics : ``score`` (n,) weighted R^2 of the local fit, ``intercept`` (n,),
            ``local_prediction`` (n,) the local model at the instance, ``model_output`` (n,) the
            black box's probability of the target class.
        metrics : ``seconds_per_explanation``, ``mean_score``.
    """

    kind = "lime"
    Params = LimeParams

    explainer_: Any
    scale_: NDArray[np.float64]

    def _check_data(self, dataset: Dataset) -> None:
        schema = dataset.schema
        features = schema.n_continuous + len(schema.categorical)
        if self.params.num_samples * features > MAX_SAMPLE_VALUES:
            raise over_limit(
                f"num_samples x features = {self.params.num_samples:,} x {features:,}",
                self.params.num_samples * features,
                MAX_SAMPLE_VALUES,
                "values in each instance's sample",
                f"Lower num_samples to {MAX_SAMPLE_VALUES // features:,} or less for this data set.",
            )

    def _fit(
        self,
        dataset: Dataset,
        model: Model,
        *,
        surrogate: Model | None,
        progress: ProgressFn | None,
        should_stop: StopFn | None,
    ) -> None:
        """Read the training statistics lime samples from (standard deviations, category
        frequencies, and the bins when discretising)."""
        schema = dataset.schema
        report(progress, 0.0, "LIME: reading training statistics")
        train = feature_view(schema, dataset.X_train)
        names = list(model.class_names or dataset.class_names)
        self._set_explainer(self._lime_explainer(schema, train, names))

    def _lime_explainer(
        self, schema: FeatureSchema, train: NDArray, class_names: list[str], discretizer: Any = None
    ) -> Any:
        from lime.lime_tabular import LimeTabularExplainer

        p = self.params
        # One RandomState, shared with the discretizer as lime shares it.
        random_state = np.random.RandomState(p.seed)
        return LimeTabularExplainer(
            train,
            mode="classification",
            feature_names=schema.original_names,
            class_names=list(class_names),
            categorical_features=list(categorical_codes(schema)),
            categorical_names=categorical_codes(schema),
            kernel_width=p.kernel_width or None,
            discretize_continuous=p.discretize_continuous,
            discretizer=discretizer or p.discretizer,
            sample_around_instance=p.sample_around_instance,
            random_state=random_state,
        )

    def _set_explainer(self, explainer: Any) -> None:
        self.explainer_ = explainer
        # lime regresses on (x - mean) / scale; dividing its coefficients by the scale gives slopes
        # per model-space unit. Categorical and discretised columns have scale 1 (indicators).
        scale = np.asarray(explainer.scaler.scale_, dtype=np.float64).copy()
        if self.params.discretize_continuous:
            scale[:] = 1.0
        self.scale_ = scale

    def _explain(
        self, query: Query, *, progress: ProgressFn | None, should_stop: StopFn | None
    ) -> Result:
        """One lime explanation per row, towards its target (default: the black box's class)."""
        model = self._fitted_model()
        schema, p = self.schema_, self.params
        X, n = query.X, query.n
        targets = query.predictions if query.targets is None else query.targets
        Z = feature_view(schema, X)
        m = Z.shape[1]
        num_features = p.num_features or m
        selection = p.feature_selection
        if selection == "auto" and num_features >= m:
            selection = "none"  # all features kept: skip lime's extra selection fit
        self.explainer_.feature_selection = selection

        def predict_fn(rows: NDArray) -> NDArray:
            return model.predict_proba(model_space(schema, rows))

        values = np.zeros((n, m))
        score, intercept, local_pred = np.zeros(n), np.zeros(n), np.zeros(n)
        for i in range(n):
            check_cancel(should_stop)
            # Re-seed per instance, so an instance's explanation does not depend on the batch it is in.
            self.explainer_.random_state = np.random.RandomState(p.seed)
            label = int(targets[i])
            exp = self.explainer_.explain_instance(
                Z[i],
                predict_fn,
                labels=(label,),
                num_features=num_features,
                num_samples=p.num_samples,
            )
            for j, w in exp.local_exp[label]:
                values[i, j] = w
            intercept[i] = float(exp.intercept[label])
            score[i] = float(exp.score)
            local_pred[i] = float(np.ravel(exp.local_pred)[0])
            report(progress, (i + 1) / n, f"LIME: explained {i + 1}/{n}")
        return Result(
            targets=targets,
            attributions=spread_to_columns(schema, values / self.scale_, X),
            diagnostics={
                "score": score,
                "intercept": intercept,
                "local_prediction": local_pred,
                "model_output": query.proba[np.arange(n), targets],
            },
            metrics={"mean_score": float(score.mean()) if n else None},
            note="lime LimeTabularExplainer, per feature"
            + (", per pixel" if schema.image_shape else ""),
        )

    # ------------------------------------------------------------------ persistence
    def _save_state(self, folder: Path) -> dict[str, Any]:
        """The training statistics lime derived (scaler, category frequencies, bins): enough to
        rebuild the same sampler without the training split."""
        e = self.explainer_
        state: dict[str, Any] = {
            "scaler": {k: getattr(e.scaler, k) for k in ("mean_", "scale_", "var_")},
            "feature_values": {str(k): list(v) for k, v in e.feature_values.items()},
            "feature_frequencies": {str(k): v for k, v in e.feature_frequencies.items()},
        }
        if e.discretizer is not None:
            state["discretizer"] = {
                k: getattr(e.discretizer, k) for k in ("means", "stds", "mins", "maxs")
            }
        return state

    def _load_state(
        self, folder: Path, state: dict[str, Any], model: Model | None, device: str
    ) -> None:
        from lime.discretize import StatsDiscretizer

        schema = self.schema_
        codes = categorical_codes(schema)
        # A one-row stand-in for the training split: lime computes its statistics from it, and
        # every one of them is then replaced by the saved value.
        stand_in = np.zeros((1, len(schema.original_names)))
        discretizer = None
        if "discretizer" in state:
            stats = {
                name: {int(k): v for k, v in state["discretizer"][name].items()}
                for name in ("means", "stds", "mins", "maxs")
            }
            # lime keeps [min, borders...] in mins; the borders are its bins.
            stats["bins"] = {k: v[1:] for k, v in stats["mins"].items()}
            discretizer = StatsDiscretizer(
                stand_in, list(codes), schema.original_names,
                random_state=np.random.RandomState(self.params.seed), data_stats=stats,
            )  # fmt: skip
        explainer = self._lime_explainer(schema, stand_in, self.class_names_, discretizer)
        if discretizer is not None:
            explainer.discretizer.random_state = explainer.random_state
        for name, value in state["scaler"].items():
            setattr(explainer.scaler, name, np.asarray(value, dtype=np.float64))
        explainer.feature_values = {int(k): list(v) for k, v in state["feature_values"].items()}
        explainer.feature_frequencies = {
            int(k): np.asarray(v, dtype=np.float64) for k, v in state["feature_frequencies"].items()
        }
        self._set_explainer(explainer)
