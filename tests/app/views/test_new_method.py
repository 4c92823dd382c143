"""A new method is its own file (here: this test module) and its registry entry, nothing else: it
appears in the Explain page's picker with its form, runs as a job, and shows in Compare, the
arrow field's comparison and the report, because pages choose by what a result holds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from app import catalog
from app.jobs import SUCCEEDED, runtime
from explainers.base import Explainer, Query, Result, param
from explainers.registry import METHODS, MethodInfo, UpTo
from tests.app.views.prepared import finished_run
from tests.app.views.prepared import open_view as _page
from tests.factories import emap_like_moons

ROOT = Path(__file__).resolve().parents[3]
VIEWS = ROOT / "app" / "views"


@dataclass(frozen=True)
class SlopeParams:
    step: float = param(0.05, "finite-difference step in model space", 1e-4, 1.0)


class Slope(Explainer[SlopeParams]):
    """Central finite differences of the explained class's probability (model-agnostic).

    Returns attributions (n, d): the slope of ``P(target | x)`` along each model-space column.
    """

    kind = "slope"
    Params = SlopeParams

    def _explain(self, query: Query, *, progress, should_stop) -> Result:
        model = self._fitted_model()
        targets = query.predictions if query.targets is None else query.targets
        X = query.X.astype(np.float64)
        rows = np.arange(len(X))
        slopes = np.zeros_like(X)
        for j in range(X.shape[1]):
            step = np.zeros(X.shape[1])
            step[j] = self.params.step
            up = model.predict_proba(X + step)[rows, targets]
            down = model.predict_proba(X - step)[rows, targets]
            slopes[:, j] = (up - down) / (2 * self.params.step)
        return Result(targets=targets, attributions=slopes)


SLOPE = MethodInfo(
    kind="slope",
    title="Finite-difference slope",
    module=__name__,
    cls="Slope",
    params_cls="SlopeParams",
    modalities=("points2d", "tabular"),
    default_rows=UpTo(50),
    holds=frozenset({"attributions"}),
    summary="the slope of the explained class's probability along each feature",
)


@pytest.fixture
def slope(env, monkeypatch):
    """The method registered, as its entry in explainers/registry.py would register it."""
    monkeypatch.setitem(METHODS, "slope", SLOPE)
    return env


def test_a_registered_method_runs_from_the_explain_page_and_shows_in_every_view_that_fits(slope):
    store = slope
    # The Explain page offers it, with its own form, and queues it as a job of its kind.
    at = _page("explain")
    assert "Finite-difference slope" in at.selectbox(key="method").options
    at.selectbox(key="method").set_value("slope").run()
    assert at.number_input(key="rows.slope").value == 50  # its default rows, from the entry
    assert at.number_input(key="params.slope.step").value == pytest.approx(0.05)
    assert any("Compare" in c.value for c in at.caption), "the views it will show in"
    at.number_input(key="rows.slope").set_value(30)
    at.button[0].click().run()
    assert not at.exception, at.exception
    (queued,) = store.list(kind="slope")
    assert queued.params == {"rows": 30}
    # A worker runs it like every method: fit, explain the first test rows, save.
    assert runtime.execute(queued.id, store) == SUCCEEDED, store.read_log(queued.id)
    exp = store.load_explanation(queued.id)
    assert exp.method == "slope" and exp.attributions.shape == (30, 2)
    assert exp.rows == {"split": "test", "start": 0, "stop": 30}
    assert {"slope/explainer.json", "explanation/arrays.npz"} <= set(store.get(queued.id).artifacts)

    # Compare puts it beside EMAP and measures their agreement on the rows both explain.
    finished_run(store, "emap", "moons", emap_like_moons(60))
    at = _page("compare")
    assert set(at.multiselect(key="cmp_methods").value) == {"slope", "emap"}
    assert len(at.get("plotly_chart")) == 3
    pairs = " ".join(at.dataframe[0].value.index)
    assert "Finite-difference slope" in pairs and "EMAP" in pairs

    # The arrow field of the EMAP run offers it for comparison, named by its title.
    at = _page("arrows", run=store.list(kind="emap")[0].id)
    labels = {m.label for m in at.metric}
    assert "Mean cosine, EMAP vs Finite-difference slope" in labels

    # The report draws what it holds: attributions as an arrow field.
    at = _page("report", run=queued.id)
    (holds,) = [m.value for m in at.markdown if "The report holds" in m.value]
    assert "Where the decision flips" in holds  # the arrow field's title in the report
    assert at.get("download_button")


def test_the_catalog_places_the_method_by_what_it_holds(slope):
    names = {v.title for v in catalog.views_for("slope", "points2d")}
    assert names == {"Arrow field", "Compare", "Share & export"}
    assert catalog.views_for("slope", "image") == []  # not a modality it explains
    deduce = {v.title for v in catalog.views_for("deduce", "image")}
    assert deduce == {
        "Image counterfactuals", "Arrow field", "Compare", "Uncertainty triage", "Share & export"
    }  # fmt: skip
    # A result that holds attributions opens on Compare; one that holds counterfactuals of
    # images on the image view, whatever method made it.
    attr = catalog.Holding("slope", frozenset({"attributions"}), "points2d")
    assert catalog.home_view(attr).page == "views/compare.py"
    cf_images = catalog.Holding("slope", frozenset({"counterfactuals"}), "image")
    assert catalog.home_view(cf_images).page == "views/images.py"


def test_no_page_names_a_method():
    """Pages, widgets and the page resources choose by what a result holds: no method's key is
    written in them (titles and what a method needs come from the registry)."""
    sources = [*VIEWS.glob("*.py"), ROOT / "app" / "widgets.py", ROOT / "app" / "resources.py"]
    sources += [ROOT / "app" / "catalog.py", ROOT / "app" / "analysis.py"]
    for path in sources:
        text = path.read_text()
        for kind in METHODS:
            named = re.findall(rf"""["']{kind}(_run)?["']""", text)
            assert not named, f"{path.relative_to(ROOT)} names the method {kind!r}"
