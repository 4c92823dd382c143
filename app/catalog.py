"""Which view shows which run: chosen by what the run's Explanation holds and its modality, never
by the method's name, so a new method appears in every view that fits without UI code.

What an Explanation holds (``Holding``) is read from the saved result itself, its
``explanation.json`` (no arrays loaded); for a result whose record cannot be read, from its
method's registry entry (``MethodInfo.holds``), so the view that fits still lists the run and
says what is wrong with it when it is opened. No streamlit import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from explainers.explanation import Explanation
from explainers.registry import METHODS, UNCERTAINTY_DIAGNOSTIC, canonical_kind

COUNTERFACTUALS, ATTRIBUTIONS, UNCERTAINTY = "counterfactuals", "attributions", "uncertainty"


@dataclass(frozen=True)
class Holding:
    """What a run's Explanation holds.

    Attributes
    ----------
    method : its kind (``explainers.registry``).
    holds : ``"counterfactuals"``, ``"attributions"``, ``"uncertainty"`` (see ``MethodInfo.holds``).
    modality : ``"points2d"``, ``"tabular"``, ``"image"``; None when unknown (an unreadable record).
    """

    method: str
    holds: frozenset[str]
    modality: str | None

    @classmethod
    def of(cls, explanation: Explanation) -> Holding:
        holds = {
            name
            for name, present in (
                (COUNTERFACTUALS, explanation.counterfactuals is not None),
                (ATTRIBUTIONS, explanation.attributions is not None),
                (UNCERTAINTY, UNCERTAINTY_DIAGNOSTIC in explanation.diagnostics),
            )
            if present
        }
        return cls(explanation.method, frozenset(holds), explanation.modality)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Holding:
        """From a saved Explanation's ``explanation.json`` (its list of saved arrays)."""
        arrays = set(meta["arrays"])
        holds = {
            name
            for name, key in (
                (COUNTERFACTUALS, "counterfactuals"),
                (ATTRIBUTIONS, "attributions"),
                (UNCERTAINTY, f"diagnostics/{UNCERTAINTY_DIAGNOSTIC}"),
            )
            if key in arrays
        }
        return cls(canonical_kind(str(meta["method"])), frozenset(holds), str(meta["modality"]))

    @classmethod
    def declared(cls, kind: str) -> Holding:
        """What every result of ``kind`` holds by its registry entry (nothing for an unknown
        kind); the modality is not known."""
        info = METHODS.get(canonical_kind(kind))
        return cls(kind, frozenset(info.holds) if info else frozenset(), None)


@dataclass(frozen=True)
class View:
    """A result view: the page, its title, what a run must hold (one of ``any_of``; empty: any
    run) in one of ``modalities`` to be shown there, and ``home``: what makes it the page a run
    opens on."""

    page: str
    title: str
    any_of: frozenset[str]
    modalities: frozenset[str] = frozenset({"points2d", "tabular", "image"})
    home: frozenset[str] = frozenset()

    def shows(self, holding: Holding) -> bool:
        """Whether this view draws ``holding`` (an unknown modality fits, so the view can say
        why it cannot be opened)."""
        modality_fits = holding.modality is None or holding.modality in self.modalities
        return modality_fits and (not self.any_of or bool(self.any_of & holding.holds))


_VECTORS = frozenset({COUNTERFACTUALS, ATTRIBUTIONS})
# In the order a run's home view is looked for: the first that shows it and whose ``home`` it holds.
VIEWS: tuple[View, ...] = (
    View(
        "views/images.py", "Image counterfactuals", frozenset({COUNTERFACTUALS}),
        frozenset({"image"}), home=frozenset({COUNTERFACTUALS}),
    ),
    View(
        "views/tabular.py", "Counterfactual table", frozenset({COUNTERFACTUALS}),
        frozenset({"tabular"}), home=frozenset({COUNTERFACTUALS}),
    ),
    View("views/arrows.py", "Arrow field", _VECTORS, home=frozenset({COUNTERFACTUALS})),
    View("views/compare.py", "Compare", _VECTORS, home=frozenset({ATTRIBUTIONS})),
    View("views/triage.py", "Uncertainty triage", frozenset({COUNTERFACTUALS})),
    View("views/report.py", "Share & export", frozenset(), home=_VECTORS),
)  # fmt: skip
PAGES = {view.page.removeprefix("views/").removesuffix(".py"): view for view in VIEWS}


def view(page: str) -> View:
    """The view of a page (``"arrows"``, ``"compare"``, ...)."""
    return PAGES[page]


def home_view(holding: Holding) -> View | None:
    """The view a run opens on: the first of ``VIEWS`` that shows it and whose ``home`` it holds
    (None for a run that holds nothing a view draws: the report still lists it)."""
    for candidate in VIEWS:
        if candidate.shows(holding) and candidate.home & holding.holds:
            return candidate
    return None


def views_for(kind: str, modality: str) -> list[View]:
    """The views that will show a result of method ``kind`` on ``modality`` data, by what its
    registry entry says every result holds (before any run exists); none for a modality the
    method does not explain."""
    info = METHODS.get(canonical_kind(kind))
    if info is None or modality not in info.modalities:
        return []
    holding = Holding(kind, Holding.declared(kind).holds, modality)
    return [v for v in VIEWS if v.shows(holding)]
