"""What if: ask a finished tabular counterfactual run's fitted method about one edited row.

A method job saves its fitted state beside its Explanation (``artifacts/<kind>/``,
``Explainer.save``). Loaded once with the run's black box (the page keeps the ``WhatIf`` in a
cache per run, so an edit never reloads networks), each edit is one ``explain`` of one row:
the black box's class and probabilities for the edited row and the method's counterfactual for
it. For EMAP that is one forward pass of the perturbation network, then, with ``verify``, the
black-box check that repairs and shrinks it (``explainers.counterfactuals.refine``), so the
counterfactual shown is one the black box confirmed, as in the run itself.

Values are in original units (years, hours, category names), one per original column
(``FeatureSchema.original_names``). Features the run pinned stay as in the row the edit started
from: the method was fitted not to change them, and an edit of one would ask about a person the
run's settings never allow for. No streamlit import.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from app.jobs.store import Run, RunStore
from datasets.base import DataValidationError, FeatureSchema
from explainers.base import Explainer, ExplainerStateError
from explainers.explanation import Explanation
from explainers.models import Model
from explainers.registry import canonical_kind, get_method

Value = float | int | str


class WhatIfError(ValueError):
    """An edit or a run the what-if editor cannot use; the message says what to do."""


@dataclass(frozen=True)
class Answer:
    """The black box and the method on one edited row.

    Attributes
    ----------
    values : the edited row in original units, one entry per original column.
    explanation : the method's Explanation of that one row (n = 1): ``predictions[0]`` is the
        black box's class, ``counterfactuals[0]`` the counterfactual in model space,
        ``counterfactual_predictions[0]`` its class, ``success[0]`` whether it flips.
    proba : (C,) the black box's class probabilities for the edited row.
    counterfactual_proba : (C,) the same for its counterfactual.
    seconds : server time of the edit: encoding, the method's explain and the probabilities.
    """

    values: dict[str, Value]
    explanation: Explanation
    proba: NDArray[np.float64]
    counterfactual_proba: NDArray[np.float64]
    seconds: float

    @property
    def predicted(self) -> int:
        return int(self.explanation.predictions[0])

    @property
    def flipped(self) -> bool:
        return self.explanation.success is not None and bool(self.explanation.success[0])


class WhatIf:
    """A fitted counterfactual method bound to its run's black box, asked about one row at a time.

    Parameters
    ----------
    explainer : a fitted (or loaded) ``Explainer`` of tabular data whose explanations hold
        counterfactuals, with its black box bound.
    """

    def __init__(self, explainer: Explainer[Any]) -> None:
        if explainer.modality_ != "tabular":
            raise WhatIfError(
                f"the what-if editor is for tabular data; this run's method was fitted on "
                f"{explainer.modality_} data"
            )
        self.explainer = explainer
        self.schema: FeatureSchema = explainer.schema_
        pinned = getattr(explainer.params, "pinned", ()) or ()
        self.pinned: tuple[str, ...] = tuple(str(p) for p in pinned)
        self.class_names: list[str] = list(explainer.class_names_)

    @classmethod
    def of_run(cls, store: RunStore, run: Run, model: Model) -> WhatIf:
        """The fitted method a finished run saved, bound to ``model`` (the run's black box).

        Raises ``WhatIfError`` when the run kept no fitted method (a result imported without it)
        or its state does not load."""
        kind = canonical_kind(run.kind)
        try:
            info = get_method(kind)
        except ValueError:
            raise WhatIfError(f"{run.kind!r} is not an explanation method's run") from None
        folder = store.artifacts_dir(run.id) / run.kind
        if not folder.is_dir():
            raise WhatIfError(
                f"this {info.title} run kept no fitted method to ask about new rows; start "
                f"{info.title} again on the Explain page to use the what-if editor"
            )
        try:
            explainer = info.load().load(folder, model=model, device="cpu")
        except ExplainerStateError as exc:
            raise WhatIfError(f"the run's fitted {info.title} cannot be loaded: {exc}") from None
        return cls(explainer)

    def values_of(self, row: NDArray) -> dict[str, Value]:
        """A model-space row (d,) in original units: plain floats, ints (integer features) and
        category names, one per original column."""
        frame = self.schema.decode(np.asarray(row)[None, :])
        out: dict[str, Value] = {}
        for name in self.schema.original_names:
            v = frame[name].iloc[0]
            out[name] = v if isinstance(v, str) else v.item() if hasattr(v, "item") else v
        return out

    def encode(self, values: Mapping[str, Any], start: Mapping[str, Any]) -> NDArray[np.float32]:
        """The edited row ``values`` (original units) as one model-space row (1, d); ``start``
        is the row the edit began from (``values_of``), whose pinned features ``values`` must keep.

        Raises ``WhatIfError`` naming the feature: missing, not a finite number, an unknown
        category, or a pinned feature changed."""
        names = self.schema.original_names
        missing = [n for n in names if n not in values]
        if missing:
            raise WhatIfError(f"no value for {', '.join(missing)}; give every feature a value")
        for name in self.pinned:
            if name in values and str(values[name]) != str(start.get(name)):
                raise WhatIfError(
                    f"{name} is pinned in this run (the method may not change it), so it stays "
                    f"{start.get(name)}; start the method without pinning {name} to vary it"
                )
        row: dict[str, Any] = {}
        for f in self.schema.continuous:
            v = values[f.name]
            try:
                number = float(v)
            except (TypeError, ValueError):
                number = math.nan
            if not math.isfinite(number) or isinstance(v, bool):
                raise WhatIfError(f"{f.name} must be a finite number, got {v!r}")
            row[f.name] = number
        for c in self.schema.categorical:
            v = values[c.name]
            if str(v) not in c.categories:
                shown = ", ".join(c.categories[:10]) + (", ..." if len(c.categories) > 10 else "")
                raise WhatIfError(f"{c.name} must be one of {shown}; got {v!r}")
            row[c.name] = str(v)
        try:
            return self.schema.encode(pd.DataFrame([row], columns=names))
        except DataValidationError as exc:
            raise WhatIfError(str(exc)) from None

    @property
    def verifies(self) -> bool:
        """Whether the method can check its counterfactuals on the black box (``verify``)."""
        return hasattr(self.explainer.params, "verify")

    def ask(self, values: Mapping[str, Any], start: Mapping[str, Any], *, verify: bool) -> Answer:
        """The black box's class and probabilities for the edited row and the method's
        counterfactual for it (``encode`` checks the values).

        ``verify``: check, repair and shrink the counterfactual on the black box as the run
        did (EMAP: about 10 to 20 batched black-box calls); off, the method's one pass (EMAP:
        one forward pass of its perturbation network) is judged by one black-box call. Either
        way the class shown for the counterfactual is the black box's.
        """
        t0 = time.perf_counter()
        X = self.encode(values, start)
        model = self.explainer.model_
        assert model is not None  # of_run and __init__'s caller bind the black box
        # A copy per edit (the networks are shared, read-only): pages of several sessions may
        # ask the same cached WhatIf at once, and verify is set per edit.
        explainer = copy.copy(self.explainer)
        remembering = _Remembering(model)
        explainer.model_ = remembering
        # One counterfactual is shown, so a method that offers several per row looks for one.
        changes: dict[str, Any] = {}
        if self.verifies:
            changes["verify"] = verify
        if hasattr(explainer.params, "n_counterfactuals"):
            changes["n_counterfactuals"] = 1
        if changes:
            explainer.params = dataclasses.replace(explainer.params, **changes)
        explanation = explainer.explain(X)
        assert explanation.counterfactuals is not None, "a counterfactual method's run"
        both = remembering.predict_proba(np.vstack([X, explanation.counterfactuals]))
        seconds = time.perf_counter() - t0
        edited = {n: values[n] for n in self.schema.original_names}
        return Answer(edited, explanation, both[0], both[1], seconds)


class _Remembering:
    """The black box, remembering its answers for the rows of one edit: the method asks about
    the edited row and its counterfactual already, and each call of a forest or a sandboxed
    model costs tens of milliseconds whatever the rows, so the page's probabilities cost no
    further call."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.n_classes = model.n_classes
        self.class_names = model.class_names
        self.n_features = model.n_features
        self.capabilities = model.capabilities
        self.description = model.description
        self.density = getattr(model, "density", None)
        self._seen: dict[bytes, NDArray[np.float64]] = {}

    def predict_proba(self, X: NDArray) -> NDArray[np.float64]:
        X = np.ascontiguousarray(X, dtype=np.float32)
        keys = [row.tobytes() for row in X]
        new = [i for i, k in enumerate(keys) if k not in self._seen]
        if new:
            proba = np.asarray(self.model.predict_proba(X[new]), dtype=np.float64)
            self._seen.update(zip([keys[i] for i in new], proba, strict=True))
        if not keys:
            return np.zeros((0, self.n_classes))
        return np.stack([self._seen[k] for k in keys])

    def predict(self, X: NDArray) -> NDArray[np.int64]:
        return self.predict_proba(X).argmax(axis=1).astype(np.int64)
