"""Read-only objects shared across sessions through ``st.cache_resource`` (never copied: hook-based
spectral norm cannot be deep-copied, so ``st.cache_data`` would break torch models).

A cache is shared by every session, so the owner check (``gate()``, ``app.access``) runs before a
cached loader is called, never inside one: views load what they show through the functions here
(``selected_*`` for the session's choice, ``run_*`` for a run), which check first and then resolve
specs with the same ``app.jobs.resolve.Resolver`` a job uses, fed with the caches; the
``_``-prefixed loaders check nothing. Views never touch the run store's files: a run's results
are read through the store's methods here.

Pages never train: a demo black box that is not built yet raises ``DemoModelMissing``, and
``demo_model_job`` queues the ``blackbox`` job that builds it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import streamlit as st
from numpy.typing import NDArray

from app import analysis, state
from app.access import VIEW, Gate
from app.catalog import Holding
from app.config import settings
from app.jobs import CANCELLED, FAILED, JobBackend, Run, RunStore, get_backend
from app.jobs.resolve import Loaders, Resolver, load_run_model
from app.jobs.whatif import WhatIf, WhatIfError
from app.state import Selection
from app.uploads import upload_store
from datasets import Dataset, load_dataset
from explainers.blackbox import DemoModelMissing, demo_model, evaluate
from explainers.explanation import Explanation
from explainers.models import Model

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from app.analysis import DecisionRegions, FieldPlane, Projection2D


@st.cache_resource(show_spinner=False)
def dataset(name: str) -> Dataset:
    return load_dataset(name)


@st.cache_resource(show_spinner=False)
def demo(name: str) -> Model:
    """The demo black box of a built-in data set; ``DemoModelMissing`` until its ``blackbox``
    job has built it (a page never trains one). The exception is not cached, the model is."""
    return demo_model(name, settings().cache_dir, train=False)


# Uploaded data sets and models are shared by the sessions that open them, but each can take
# hundreds of MB (two 45 MB CSVs took the process from 0.5 to 1.3 GB): a few of each are kept,
# for an hour after they were loaded, then read again from disk when asked for.
UPLOADS_KEPT = 4
UPLOAD_CACHE_TTL_S = 3600


def gate() -> Gate:
    """What this session may do with runs and uploads: its signed-in user (None without sign-in)
    and the share links it was opened with."""
    from app import auth

    return Gate(auth.current_user(), backend().store, upload_store(), links=state.share_links())


@st.cache_resource(show_spinner=False, max_entries=UPLOADS_KEPT, ttl=UPLOAD_CACHE_TTL_S)
def _uploaded_dataset(upload_id: str) -> Dataset:
    return upload_store().dataset(upload_id)


@st.cache_resource(show_spinner=False, max_entries=64, ttl=UPLOAD_CACHE_TTL_S)
def _uploaded_header(upload_id: str) -> Dataset:
    return upload_store().dataset_header(upload_id)


@st.cache_resource(show_spinner=False, max_entries=UPLOADS_KEPT, ttl=UPLOAD_CACHE_TTL_S)
def _uploaded_model(upload_id: str) -> Model:
    return upload_store().model(upload_id)


@st.cache_resource(show_spinner=False, max_entries=8)
def _run_model(run_id: str, root: str, class_names: tuple[str, ...]) -> Model:
    # A finished run's model never changes, so one copy serves every session that may view it.
    store = RunStore(root)
    return load_run_model(store, store.get(run_id), "cpu", list(class_names))


def _demo_for_page(name: str, progress: Any = None, should_stop: Any = None) -> Model:
    return demo(name)


def _run_model_for_page(store: RunStore, run: Run, device: str, class_names: list[str]) -> Model:
    return _run_model(run.id, str(store.root), tuple(class_names))


PAGE_LOADERS = Loaders(
    builtin=dataset,
    uploaded_dataset=_uploaded_dataset,
    uploaded_header=_uploaded_header,
    demo_model=_demo_for_page,
    uploaded_model=_uploaded_model,
    run_model=_run_model_for_page,
)


def _resolver(checked: Gate | None) -> Resolver:
    """Specs -> objects through the page's caches; ``checked`` None: specs of a run already
    checked (``gate().run(id, VIEW)``), shown through it."""
    return Resolver(backend().store, checked, VIEW, PAGE_LOADERS)


@st.cache_resource(show_spinner=False, max_entries=64, ttl=UPLOAD_CACHE_TTL_S)
def _scores(
    model_key: str, dataset_key: str, _model: Model, _dataset: Dataset
) -> dict[str, object]:
    return evaluate(_model, _dataset)


def selected_scores(sel: Selection) -> dict[str, object]:
    """Test-split accuracy, F1 and confusion matrix of the selected model (cached per model)."""
    if sel.model is None:
        raise ValueError("no model is selected")
    model, data = selected_model(sel), selected_dataset(sel)
    assert model is not None
    key = json.dumps(sel.model.to_json(), sort_keys=True)
    return _scores(key, json.dumps(sel.dataset.to_json(), sort_keys=True), model, data)


@st.cache_resource(show_spinner=False)
def backend() -> JobBackend:
    """The job backend of this process (SQLite queue in the data dir, or Redis if configured).
    The precomputed demo runs shipped in assets/ are installed into its run store on first use."""
    from app.demo_runs import install

    jobs = get_backend()
    if settings().demo_runs:
        install(jobs.store)
    return jobs


def demo_runs(dataset_name: str) -> dict[str, str]:
    """``{kind: run id}`` of the precomputed demo runs on a built-in data set."""
    from app.demo_runs import demo_runs_for

    if not settings().demo_runs:
        return {}
    return demo_runs_for(backend().store, dataset_name)


def selected_dataset(sel: Selection) -> Dataset:
    """The data set this session chose (``SpecError`` for another user's upload)."""
    return _resolver(gate()).dataset(sel.dataset)


def selected_model(sel: Selection) -> Model | None:
    """The model this session chose (``SpecError`` for another user's upload;
    ``DemoModelMissing`` for a demo whose black box is being built)."""
    if sel.model is None:
        return None
    return _resolver(gate()).model(sel.model, sel.dataset, selected_dataset(sel))


def selected_capabilities(sel: Selection) -> frozenset[str]:
    model = selected_model(sel)
    return frozenset() if model is None else frozenset(model.capabilities)


# --------------------------------------------------------------------------- demo black boxes
def demo_model_job(name: str, *, again: bool = False) -> Run:
    """The ``blackbox`` job that builds the demo black box of ``name``: the newest one with the
    demo's settings (queued, running or ended), or, when there is none or ``again``, one queued
    now. It belongs to nobody (every visitor sees its progress) and counts only towards the
    instance's job cap."""
    jobs = backend()
    wanted = {"name": name}
    if not again:
        for run in jobs.store.list(kind="blackbox"):
            if run.dataset == wanted and not run.params and not run.model and run.owner is None:
                return run
    return jobs.store.get(jobs.submit("blackbox", dataset=wanted, params={}))


def demo_build_failed(run: Run) -> bool:
    """Whether the build job ended without a demo black box to show for it."""
    return run.status in (FAILED, CANCELLED) or (run.finished and not _demo_ready(run))


def _demo_ready(run: Run) -> bool:
    from explainers.blackbox import demo_model_ready

    return demo_model_ready(str(run.dataset.get("name")), settings().cache_dir)


# --------------------------------------------------------------------------- runs
def run_model(run: Run) -> Model | None:
    """The black box a run was made with, for drawing it (decision regions, class
    probabilities): whoever may view the run may see it, read-only, even through a share link.
    None when it cannot be loaded any more (a deleted upload or run); ``DemoModelMissing`` while
    a demo black box is being built. Bound through the data set's header
    (``Resolver.dataset_header``): an uploaded table is not decoded for it."""
    checked = gate().run(run.id, VIEW)
    if not checked.model:
        return None
    resolver = _resolver(None)
    try:
        return resolver.model(
            checked.model, checked.dataset, resolver.dataset_header(checked.dataset)
        )
    except DemoModelMissing:
        raise
    except (ValueError, LookupError, OSError):
        return None


def upload_name(upload_id: str) -> str:
    """An upload's display name (``UploadInfo.name``), for naming the data set or model of a
    run the caller may view or of this session's selection; "upload" and the id's start when
    its record cannot be read (deleted, damaged)."""
    try:
        return gate().uploads.info(upload_id).name
    except (LookupError, OSError, ValueError, TypeError):
        return f"upload {upload_id[:6]}"


def run_dataset(run: Run) -> Dataset:
    """The data set a run was made on, for whoever may view the run (as ``run_model``)."""
    return _resolver(None).dataset(gate().run(run.id, VIEW).dataset)


def run_explanation(run: Run) -> Explanation:
    """A finished run's Explanation, for whoever may view the run."""
    store = backend().store
    return _explanation(gate().run(run.id, VIEW).id, str(store.root))


@st.cache_resource(show_spinner=False, max_entries=32)
def _explanation(run_id: str, root: str) -> Explanation:
    # Immutable once the run succeeded, so safe to share between sessions.
    return RunStore(root).load_explanation(run_id)


def run_quality(run: Run) -> dict[str, Any] | None:
    """A finished run's quality card (``app.jobs.quality``) for whoever may view the run; None
    for a run saved without one."""
    store = backend().store
    return _quality(gate().run(run.id, VIEW).id, str(store.root))


@st.cache_data(show_spinner=False, max_entries=256)
def _quality(run_id: str, root: str) -> dict[str, Any] | None:
    # Written once by the job before the run succeeded; immutable afterwards.
    return RunStore(root).load_quality(run_id)


def run_holding(run: Run) -> Holding:
    """What a finished run's Explanation holds (read from its record alone, no arrays loaded);
    its method's declared holdings when the record cannot be read. The caller lists runs it
    may view (``gate().runs``)."""
    return _holding(run.id, str(backend().store.root), run.kind)


@st.cache_data(show_spinner=False, max_entries=1024)
def _holding(run_id: str, root: str, kind: str) -> Holding:
    try:
        return Holding.from_meta(RunStore(root).explanation_meta(run_id))
    except (ValueError, LookupError, OSError, KeyError, TypeError):
        return Holding.declared(kind)


@st.cache_resource(show_spinner=False, max_entries=32)
def _field_plane(run_id: str, root: str) -> FieldPlane | None:
    """The arrow field's default plane and regions the run's job saved (None: not saved)."""
    exp = _explanation(run_id, root)
    return RunStore(root).load_field_plane(run_id, exp.n, exp.inputs.shape[1])


def _saved_plane(run_id: str, root: str, axes: tuple) -> FieldPlane | None:
    """The plane the run's job saved, when it is the one on ``axes`` (else None)."""
    plane = _field_plane(run_id, root)
    return plane if plane is not None and plane.axes == tuple(axes) else None


def saved_regions(run: Run, axes: tuple) -> bool:
    """Whether the run's job saved the black box's regions for the arrow field on ``axes``, so
    drawing them needs no black box (``arrow_field``'s ``model``)."""
    checked = gate().run(run.id, VIEW)
    return _saved_plane(checked.id, str(backend().store.root), axes) is not None


@st.cache_resource(show_spinner=False, max_entries=16)
def _projection(run_id: str, root: str, axes: tuple) -> Projection2D | None:
    """The plane an arrow field is drawn in: None for 2-D data, PCA (the one the run's job
    saved, else computed here), or two chosen features."""
    exp = _explanation(run_id, root)
    if axes[0] in ("identity", "features"):
        return None  # the arrow builder draws feature axes itself, labelled in original units
    if axes[0] == "pca":
        saved = _saved_plane(run_id, root, ("pca",))
        if saved is not None:
            return saved.projection
        return analysis.project_2d(exp.inputs, "pca")
    return analysis.project_2d(
        exp.inputs, "features", (int(axes[1]), int(axes[2])), exp.feature_names
    )


@st.cache_resource(show_spinner="Drawing the black box's decision regions", max_entries=16)
def _regions(run_id: str, root: str, axes: tuple, _model: Model) -> DecisionRegions:
    """The black box's class probabilities on a grid of the plane (a slice for projections)."""
    exp = _explanation(run_id, root)
    if axes[0] == "identity":
        projection = None
    elif axes[0] == "features":
        projection = analysis.project_2d(exp.inputs, "features", (int(axes[1]), int(axes[2])))
    else:
        projection = _projection(run_id, root, axes)
    return analysis.regions_around(_model, exp, projection)


def arrow_field(
    run: Run, axes: tuple, *, regions: bool = False, model: Model | None = None,
    plane_of: Run | None = None, **options: Any,
) -> go.Figure:  # fmt: skip
    """A finished run's arrow field, built once per view and shared by every session that may
    view the run (a share link opened by many people). Read-only: ``st.plotly_chart`` copies a
    figure (``to_dict``) before it serialises it. ``regions``: draw the black box's regions under
    the arrows: those the run's job saved for ``axes`` (``saved_regions``), else computed with
    ``model``, the run's black box (``run_model``; None: no regions). ``plane_of``: draw in that
    run's projection (another method's arrows in the plane of the field beside them).
    ``options``: ``k_pct``, ``normalise``, ``selected``, ``title``, ``ranges`` of the figure."""
    checked = gate()
    run_id = checked.run(run.id, VIEW).id
    plane = checked.run(plane_of.id, VIEW).id if plane_of is not None else None
    root = str(checked.store.root)
    background = None
    if regions:
        saved = _saved_plane(run_id, root, axes)
        if saved is not None:
            background = saved.regions
        elif model is not None:
            background = _regions(run_id, root, axes, model)
    return _arrow_field(
        run_id, root, axes, plane_of=plane, regions_on=background is not None,
        _background=background, **options,
    )  # fmt: skip


@st.cache_resource(show_spinner=False, max_entries=64)
def _arrow_field(
    run_id: str,
    root: str,
    axes: tuple,
    *,
    k_pct: int,
    normalise: bool,
    selected: int | None,
    title: str,
    ranges: tuple | None = None,
    plane_of: str | None = None,
    regions_on: bool = False,
    _background: DecisionRegions | None = None,
) -> go.Figure:
    # ``regions_on`` is in the cache key; the regions themselves (unhashed) follow from the run.
    from app.plots.arrows import arrow_field_figure

    exp = _explanation(run_id, root)
    features = (int(axes[1]), int(axes[2])) if axes[0] == "features" else (0, 1)
    return arrow_field_figure(
        exp,
        k_pct=k_pct,
        normalise=normalise,
        background=_background,
        selected=selected,
        projection=_projection(plane_of or run_id, root, axes),
        features=features,
        ranges=ranges,
        title=title,
    )


def what_if(run: Run) -> WhatIf:
    """The fitted method a finished tabular counterfactual run saved, bound to the run's black
    box, for the what-if editor: loaded once per run and shared by every session that may view
    the run (each edit is then one ``WhatIf.ask``, with no loading). ``WhatIfError`` says why a
    run cannot be asked about new rows; ``DemoModelMissing`` while a demo black box is built."""
    checked = gate().run(run.id, VIEW)
    model = run_model(checked)
    if model is None:
        raise WhatIfError(
            "the black box this run was made with cannot be loaded any more (its upload or "
            "run was deleted)"
        )
    return _what_if(checked.id, str(backend().store.root), model)


@st.cache_resource(show_spinner="Loading the run's fitted method", max_entries=8)
def _what_if(run_id: str, root: str, _model: Model) -> WhatIf:
    # A finished run's fitted method and black box never change; ``ask`` copies what it sets.
    store = RunStore(root)
    return WhatIf.of_run(store, store.get(run_id), _model)


def agreement(run: Run, other: Run) -> tuple[float, float]:
    """Mean cosine between two runs' vectors over the rows both explain, and the same without the
    first run's smallest 10% (``app.analysis.mean_cosines``)."""
    checked = gate()
    first, second = checked.run(run.id, VIEW).id, checked.run(other.id, VIEW).id
    return _agreement(first, second, str(checked.store.root))


@st.cache_data(show_spinner=False, max_entries=64)
def _agreement(run_id: str, other_id: str, root: str) -> tuple[float, float]:
    return analysis.mean_cosines(_explanation(run_id, root), _explanation(other_id, root))


def true_labels(run: Run, exp: Explanation) -> NDArray[np.int64] | None:
    """The true class of each row ``exp`` explains: recorded with the run (never reading its data
    set, which for an upload means decoding the whole table), or for a run saved without them,
    when they are rows of its data set's test split (``app.analysis.explained_test_rows``);
    else None."""
    if exp.labels is not None:
        return exp.labels
    return analysis.true_labels(exp, run_dataset(run))


def black_box_errors(run: Run, exp: Explanation) -> NDArray[np.bool_] | None:
    """Whether the black box misclassifies each explained row (None if the rows are not the
    test split's)."""
    labels = true_labels(run, exp)
    return None if labels is None else exp.predictions != labels
