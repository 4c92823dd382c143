"""Read-only objects shared across sessions through ``st.cache_resource`` (never copied: hook-based
spectral norm cannot be deep-copied, so ``st.cache_data`` would break torch models).

A cache is shared by every session, so the owner check (``gate()``, ``app.access``) runs before a
cached loader is called, never inside one: views load uploads through ``selected_*`` and a run's
data set and model through ``run_dataset``/``run_model``; the ``_``-prefixed loaders check nothing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import streamlit as st
from numpy.typing import NDArray

from app import state
from app.access import VIEW, Gate
from app.config import settings
from app.jobs import JobBackend, Run, RunStore, get_backend
from app.state import Selection
from app.uploads import UploadStore, upload_store
from datasets import Dataset, load_dataset
from explainers.blackbox import demo_model, evaluate
from explainers.explanation import Explanation
from explainers.models import Model

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from app.plots.arrows import DecisionRegions, Projection2D


@st.cache_resource(show_spinner=False)
def dataset(name: str) -> Dataset:
    return load_dataset(name)


@st.cache_resource(show_spinner=False)
def demo(name: str) -> Model:
    return demo_model(name, settings().cache_dir)


# Uploaded data sets and models are shared by the sessions that open them, but each can take
# hundreds of MB (two 45 MB CSVs took the process from 0.5 to 1.3 GB): a few of each are kept,
# for an hour after they were loaded, then read again from disk when asked for.
UPLOADS_KEPT = 4
UPLOAD_CACHE_TTL_S = 3600


def uploads() -> UploadStore:
    return upload_store()


def gate() -> Gate:
    """What this session may do with runs and uploads: its signed-in user (None without sign-in)
    and the share links it was opened with."""
    from app import auth

    return Gate(auth.current_user(), backend().store, uploads(), links=state.share_links())


@st.cache_resource(show_spinner=False, max_entries=UPLOADS_KEPT, ttl=UPLOAD_CACHE_TTL_S)
def _uploaded_dataset(upload_id: str) -> Dataset:
    return uploads().dataset(upload_id)


@st.cache_resource(show_spinner=False, max_entries=UPLOADS_KEPT, ttl=UPLOAD_CACHE_TTL_S)
def _uploaded_model(upload_id: str) -> Model:
    return uploads().model(upload_id)


@st.cache_resource(show_spinner=False, max_entries=64, ttl=UPLOAD_CACHE_TTL_S)
def _scores(kind: str, key: str) -> dict[str, object]:
    """Test-split accuracy, F1 and confusion matrix of the selected model (cached per model)."""
    if kind == "demo":
        return evaluate(demo(key), dataset(key))
    model_info = uploads().info(key)
    return evaluate(_uploaded_model(key), _uploaded_dataset(model_info.options["dataset"]))


def selected_scores(sel: Selection) -> dict[str, object]:
    """Test-split accuracy, F1 and confusion matrix of the selected model (cached per model)."""
    if sel.model is None:
        raise ValueError("no model is selected")
    if "demo" in sel.model:
        return _scores("demo", sel.model["demo"])
    gate().upload(sel.model["upload"], VIEW)
    return _scores("upload", sel.model["upload"])


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
    """The data set this session chose (``app.access.NotYours`` for another user's upload)."""
    if sel.is_demo:
        return dataset(sel.dataset["name"])
    gate().upload(sel.dataset["upload"], VIEW)
    return _uploaded_dataset(sel.dataset["upload"])


def selected_model(sel: Selection) -> Model | None:
    """The model this session chose (``app.access.NotYours`` for another user's upload)."""
    if sel.model is None:
        return None
    if "demo" in sel.model:
        return demo(sel.model["demo"])
    gate().upload(sel.model["upload"], VIEW)
    return _uploaded_model(sel.model["upload"])


def selected_capabilities(sel: Selection) -> frozenset[str]:
    model = selected_model(sel)
    return frozenset() if model is None else frozenset(model.capabilities)


def _model_for_spec(spec: dict[str, str] | None) -> Model | None:
    if not spec:
        return None
    if "demo" in spec:
        return demo(spec["demo"])
    if "upload" in spec:
        return _uploaded_model(spec["upload"])
    return None


def run_model(run: Run) -> Model | None:
    """The black box a run was made with, for drawing it (decision regions, class
    probabilities): whoever may view the run may see it, read-only, even through a share link."""
    return _model_for_spec(gate().run(run.id, VIEW).model)


def run_dataset(run: Run) -> Dataset:
    """The data set a run was made on, for whoever may view the run (as ``run_model``)."""
    spec = gate().run(run.id, VIEW).dataset
    if "name" in spec:
        return dataset(spec["name"])
    return _uploaded_dataset(spec["upload"])


def run_explanation(run: Run) -> Explanation:
    """A finished run's Explanation, for whoever may view the run."""
    store = backend().store
    return _explanation(gate().run(run.id, VIEW).id, str(store.root))


@st.cache_resource(show_spinner=False, max_entries=32)
def _explanation(run_id: str, root: str) -> Explanation:
    # Immutable once the run succeeded, so safe to share between sessions.
    return RunStore(root).load_explanation(run_id)


@st.cache_resource(show_spinner=False, max_entries=16)
def _projection(run_id: str, root: str, axes: tuple) -> Projection2D | None:
    """The plane an arrow field is drawn in: None for 2-D data, PCA, or two chosen features."""
    from app.plots.arrows import project_2d

    exp = _explanation(run_id, root)
    if axes[0] in ("identity", "features"):
        return None  # the arrow builder draws feature axes itself, labelled in original units
    if axes[0] == "pca":
        return project_2d(exp.inputs, "pca")
    return project_2d(exp.inputs, "features", (int(axes[1]), int(axes[2])), exp.feature_names)


@st.cache_resource(show_spinner="Drawing the black box's decision regions", max_entries=16)
def _regions(run_id: str, root: str, axes: tuple, resolution: int = 120) -> DecisionRegions | None:
    """The black box's class probabilities on a grid of the plane (a slice for projections)."""
    from app.plots.arrows import decision_regions, project_2d

    store = RunStore(root)
    model = _model_for_spec(store.get(run_id).model)
    if model is None:
        return None
    exp = _explanation(run_id, root)
    features = (int(axes[1]), int(axes[2])) if axes[0] == "features" else (0, 1)
    proj = _projection(run_id, root, axes) or project_2d(exp.inputs, "features", features)
    pts = proj.points(exp.inputs)
    pad = 0.08 * (pts.max(axis=0) - pts.min(axis=0))
    lo, hi = pts.min(axis=0) - pad, pts.max(axis=0) + pad
    return decision_regions(
        model,
        (float(lo[0]), float(hi[0])),
        (float(lo[1]), float(hi[1])),
        resolution,
        projection=proj if axes[0] != "identity" else None,
    )


def arrow_field(run: Run, axes: tuple, *, plane_of: Run | None = None, **options: Any) -> go.Figure:
    """A finished run's arrow field, built once per view and shared by every session that may
    view the run (a share link opened by many people). Read-only: ``st.plotly_chart`` copies a
    figure (``to_dict``) before it serialises it. ``plane_of``: draw in that run's projection
    (LIME's arrows in the plane of the EMAP field beside them). ``options``: ``k_pct``,
    ``normalise``, ``regions_on``, ``selected``, ``title``, ``ranges`` of the figure."""
    checked = gate()
    run_id = checked.run(run.id, VIEW).id
    plane = checked.run(plane_of.id, VIEW).id if plane_of is not None else None
    return _arrow_field(run_id, str(checked.store.root), axes, plane_of=plane, **options)


@st.cache_resource(show_spinner=False, max_entries=64)
def _arrow_field(
    run_id: str,
    root: str,
    axes: tuple,
    *,
    k_pct: int,
    normalise: bool,
    regions_on: bool,
    selected: int | None,
    title: str,
    ranges: tuple | None = None,
    plane_of: str | None = None,
) -> go.Figure:
    from app.plots.arrows import arrow_field_figure

    exp = _explanation(run_id, root)
    features = (int(axes[1]), int(axes[2])) if axes[0] == "features" else (0, 1)
    background = _regions(run_id, root, axes) if regions_on else None
    return arrow_field_figure(
        exp,
        k_pct=k_pct,
        normalise=normalise,
        background=background,
        selected=selected,
        projection=_projection(plane_of or run_id, root, axes),
        features=features,
        ranges=ranges,
        title=title,
    )


def agreement(run: Run, other: Run) -> tuple[float, float]:
    """Mean cosine between two runs' attributions over the rows both explain, and the same
    without the first run's smallest 10% (by perturbation size)."""
    checked = gate()
    first, second = checked.run(run.id, VIEW).id, checked.run(other.id, VIEW).id
    return _agreement(first, second, str(checked.store.root))


@st.cache_data(show_spinner=False, max_entries=64)
def _agreement(run_id: str, other_id: str, root: str) -> tuple[float, float]:
    from app.plots.arrows import arrow_norms
    from explainers.metrics import mean_cosine

    exp, other = _explanation(run_id, root), _explanation(other_id, root)
    common = min(exp.n, other.n)
    part = exp.subset(slice(0, common))
    theirs = other.attributions[:common]
    return (
        mean_cosine(part.attributions, theirs),
        mean_cosine(part.attributions, theirs, exclude_smallest_pct=10, size=arrow_norms(part)[0]),
    )


def black_box_errors(run: Run, exp: Explanation) -> NDArray[np.bool_] | None:
    """Whether the black box misclassifies each explained row (None if the rows are not the test split's)."""
    data = run_dataset(run)
    n = exp.n
    if n > len(data.X_test) or not np.allclose(exp.inputs, data.X_test[:n], atol=1e-6):
        return None
    return exp.predictions != data.y_test[:n]


@st.cache_data(show_spinner=False, max_entries=512)
def _modality(path: str) -> str | None:
    import json

    try:
        return json.loads(Path(path).read_text()).get("modality")
    except (OSError, ValueError):
        return None


def modality(run: Run) -> str | None:
    """A finished run's modality, read from its explanation.json only (no arrays loaded)."""
    if run.path is None:
        return None
    return _modality(str(run.path / "artifacts" / "explanation" / "explanation.json"))
