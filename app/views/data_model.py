"""Data & model: pick a built-in demo or upload a data set and a model; see what was chosen."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import catalog, resources, state, widgets
from app.access import USE, NotYours
from app.jobs.kinds import title
from app.jobs.resolve import DatasetSpec, ModelSpec
from app.plots.common import class_balance_figure, confusion_matrix_figure
from app.text import md
from app.uploads import MAX_NAME, UploadWriteError
from datasets import DEMO_TITLES, Dataset, DataValidationError
from datasets.upload import infer_kinds, read_table
from explainers.blackbox import DemoModelMissing
from explainers.models import ModelCompatibilityError, ModelFormatError, ModelRuntimeError
from explainers.registry import METHODS, surrogate_providers

st.title("Data & model")
st.caption(
    "Choose what to explain: a built-in demo with its trained black box, or your own data set and model."
)

current = state.selection()
with st.expander("Start here", expanded=state.run_id() is None, icon=":material/flag:"):
    st.markdown(
        "1. **Choose what to explain** below: a built-in demo (its black box is trained for you) "
        "or your own data set and the model trained on it.\n"
        "2. **Explain**: pick a method and start it; it runs in the background.\n"
        "3. **Look at the result** in the view the Explain page offers (arrow field, "
        "counterfactual table, image counterfactuals), check it on **Uncertainty triage**, "
        "and hand it on from **Share & export** (a link or a report).\n\n"
        "In a hurry: pick a demo and open one of its precomputed results."
    )
source = st.radio(
    "Source",
    ["Built-in demo", state.UPLOAD_OWN],
    index=0 if current.is_demo else 1,
    horizontal=True,
    key=state.SOURCE_KEY,
)


def _demo_picker() -> None:
    names = list(DEMO_TITLES)
    chosen = st.selectbox(
        "Demo",
        names,
        index=names.index(current.dataset.name) if current.dataset.name in names else 0,
        format_func=DEMO_TITLES.get,
        key="demo_name",
    )
    if not current.is_demo or chosen != current.dataset.name:
        state.set_selection(state.demo_selection(chosen))
    ready = resources.demo_runs(chosen)
    if ready:
        st.caption("Precomputed results, no training wait:")
        cols = st.columns(len(ready))
        gate = resources.gate()
        for col, (kind, run_id) in zip(cols, ready.items(), strict=True):
            # The view that shows what the run holds (counterfactual images, a table, arrows...).
            home = catalog.home_view(resources.run_holding(gate.run(run_id)))
            if home and col.button(f"Open {md(title(kind))}", key=f"demo_open.{kind}"):
                state.set_run(run_id)
                st.switch_page(home.page)


def _name_field(upload_id: str, what: str) -> None:
    """Rename an upload: the name pickers, the sidebar and reports show (the file's name until
    its owner gives another)."""
    gate = resources.gate()
    try:
        info = gate.upload(upload_id, USE)
    except NotYours:
        return
    name = st.text_input(
        f"Name of this {what}",
        value=info.name,
        max_chars=MAX_NAME,
        key=f"name.{upload_id}",
        help=f"Shown in run pickers, the sidebar and reports. The file was {info.filename!r}; "
        "leave it empty to use the file's name.",
    )
    if name.strip() != info.name and (name.strip() or info.display_name):
        try:
            gate.uploads.rename(upload_id, name)
        except (ValueError, UploadWriteError) as exc:
            st.error(f"The {what} keeps its name: {md(exc)}")
            return
        st.rerun()


def _upload_picker() -> None:
    gate = resources.gate()
    uploads = gate.uploads
    st.markdown(
        "**Data**: `.csv` (UTF-8, header row), `.parquet` or `.npz` (arrays `X` and `y`, or one array per column). "
        "**Model**: `.skops`, `.onnx`, `.safetensors` or a torch state dict; pickle, joblib, dill, "
        "TorchScript and `.pt2` are refused because loading them can run code."
    )
    data_file = st.file_uploader("Data set", key="data_file")
    if data_file is not None:
        try:
            frame = read_table(data_file.getvalue(), data_file.name, uploads.limits)
        except DataValidationError as exc:
            st.error(f"The data set was not accepted: {md(exc)}")
            return
        widgets.table(frame.head(8), width="stretch")
        columns = list(frame.columns)
        label = st.selectbox(
            "Label column (the class the model predicts)",
            columns,
            index=len(columns) - 1,
            key="label",
        )
        inferred = infer_kinds(frame, label)
        kinds_frame = pd.DataFrame({"column": list(inferred), "kind": list(inferred.values())})
        edited = st.data_editor(
            kinds_frame,
            column_config={
                "column": st.column_config.TextColumn(disabled=True),
                "kind": st.column_config.SelectboxColumn(
                    options=["continuous", "categorical", "drop"], required=True
                ),
            },
            hide_index=True,
            key="kinds",
        )
        if st.button("Use this data set", type="primary", key="use_data"):
            kinds = dict(zip(edited["column"], edited["kind"], strict=True))
            try:
                upload_id, _ = uploads.add_dataset(
                    data_file.getvalue(), data_file.name, label, kinds, owner=gate.user
                )
            except DataValidationError as exc:
                st.error(f"The data set was not accepted: {md(exc)}")
                return
            except UploadWriteError as exc:
                st.error(
                    f"The data set could not be saved on the server ({md(exc)}); nothing was kept. Try again later."
                )
                return
            state.set_selection(state.Selection(DatasetSpec(upload=upload_id), None))
            st.rerun()
    sel = state.selection()
    if sel.is_demo:
        st.info("Upload a data set first; then upload the model that was trained on it.")
        return
    try:
        gate.upload(str(sel.dataset.upload), USE)
    except NotYours:
        return  # the page says below that this data set cannot be opened
    _name_field(str(sel.dataset.upload), "data set")
    model_file = st.file_uploader("Model trained on this data set", key="model_file")
    if model_file is not None and st.button("Use this model", type="primary", key="use_model"):
        try:
            model_id, _ = uploads.add_model(
                model_file.getvalue(),
                model_file.name,
                str(sel.dataset.upload),
                owner=gate.user,
            )
        except (
            ModelFormatError,
            ModelCompatibilityError,
            ModelRuntimeError,
            DataValidationError,
        ) as exc:
            st.error(md(exc))
            return
        except UploadWriteError as exc:
            st.error(
                f"The model could not be saved on the server ({md(exc)}); nothing was kept. Try again later."
            )
            return
        state.set_selection(state.Selection(sel.dataset, ModelSpec("upload", model_id)))
        st.rerun()
    if sel.model is not None and sel.model.source == "upload":
        _name_field(sel.model.ref, "model")  # below the model's upload field, as the data set's


if source == "Built-in demo":
    _demo_picker()
else:
    _upload_picker()

sel = state.selection()
if state.upload_pending():
    st.stop()  # nothing uploaded yet: the demo's figures below would describe another data set


def _load() -> tuple[Dataset | None, str | None]:
    try:
        return resources.selected_dataset(sel), None
    except (ValueError, LookupError) as exc:  # a bad file, a spec naming nothing (or not yours)
        return None, str(exc)


dataset, error = _load()
if dataset is None:
    st.error(
        f"The selected data set cannot be opened: {md(error)}. Choose a demo or upload it again."
    )
    st.stop()

st.subheader(md(widgets.dataset_name(sel.dataset)))
if dataset.description:
    st.caption(md(dataset.description))
summary = dataset.summary()
cols = st.columns(4)
cols[0].metric("Training rows", f"{summary['rows_train']:,}")
cols[1].metric("Test rows", f"{summary['rows_test']:,}")
cols[2].metric("Features", f"{summary['features']:,}")
cols[3].metric("Classes", dataset.n_classes)
balance = class_balance_figure(summary["class_counts"])  # type: ignore[arg-type]

st.subheader("Black-box model")
if sel.model is None:
    st.info("No model yet: upload the model trained on this data set above.")
    st.plotly_chart(balance, key="balance")
    st.stop()
try:
    with st.spinner("Loading the model"):
        model = resources.selected_model(sel)
        scores = resources.selected_scores(sel)
except DemoModelMissing:
    widgets.demo_model_progress(str(sel.dataset.name))
    st.plotly_chart(balance, key="balance")
    st.stop()
except (ValueError, LookupError) as exc:
    st.error(f"The model cannot be used: {md(exc)}")
    st.stop()
st.caption(f"**{md(widgets.model_name(sel.model))}**: {md(model.description)}")
cols = st.columns(3)
cols[0].metric("Test accuracy", f"{scores['accuracy']:.3f}")
f1_label = "Test F1" + (" (macro)" if scores["f1_average"] == "macro" else "")
paper = scores.get("paper_f1")
cols[1].metric(
    f1_label,
    f"{scores['f1']:.3f}",
    delta=f"{scores['f1'] - paper:+.3f} vs the paper's {paper}" if paper else None,
    delta_color="off",
)
has_gradients = "gradients" in model.capabilities
need = [i for i in METHODS.values() if "gradients" in i.needs]
through = [i.title for i in need if i.accepts_surrogate]
providers = [METHODS[k].title for k in surrogate_providers()]
cols[2].metric(
    "Gradients",
    "yes" if has_gradients else "no",
    help=f"{', '.join(i.title for i in need)} need a model with gradients."
    + (
        f" Without them, {', '.join(through)} runs on the surrogate network of "
        f"{' or '.join(providers)} and says so."
        if through and providers
        else ""
    ),
)
left, right = st.columns(2)
left.plotly_chart(balance, key="balance")
right.plotly_chart(
    confusion_matrix_figure(scores["confusion"], dataset.class_names), key="confusion"
)  # type: ignore[arg-type]
