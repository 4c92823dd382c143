"""Flipscope's entrypoint: page config, sidebar, navigation. Nothing else."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if (
    str(ROOT) not in sys.path
):  # `streamlit run app/main.py` puts app/ first on the path, not the root
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import auth, state, widgets  # noqa: E402

# An emoji favicon is inlined as SVG; a ":material/...:" one is fetched from Google's font CDN,
# which a hosted link's viewers (and an offline machine) should not depend on.
st.set_page_config(page_title="Flipscope", page_icon="🔀", layout="wide")

PAGES = [
    st.Page("views/data_model.py", title="Data & model", icon=":material/dataset:", default=True),
    st.Page("views/explain.py", title="Explain", icon=":material/play_circle:"),
    st.Page(
        "views/arrows.py", title="Arrow field", icon=":material/north_east:", url_path="arrows"
    ),
    st.Page(
        "views/images.py", title="Image counterfactuals", icon=":material/image:", url_path="images"
    ),
    st.Page(
        "views/tabular.py",
        title="Counterfactual table",
        icon=":material/table:",
        url_path="tabular",
    ),
    st.Page("views/compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
    st.Page(
        "views/triage.py", title="Uncertainty triage", icon=":material/warning:", url_path="triage"
    ),
    st.Page("views/report.py", title="Share & export", icon=":material/share:", url_path="report"),
]

# The gate comes before anything else renders: signed out (when sign-in is configured), no page,
# run or artifact is reachable. Pages live in app/views/, not app/pages/: Streamlit would run a
# script from a folder named "pages" directly, without this entrypoint, skipping the gate.
auth.require_sign_in()

page = st.navigation(PAGES)
with st.sidebar:
    st.markdown("### Flipscope")
    st.caption("What is the smallest change that would flip this decision?")
    # Before any page: the run on view (a link's, or this session's) is checked once, refused
    # plainly if it cannot be opened, and the session follows its data set and model. Only
    # Data & model shows the upload form, so only there is an upload pending.
    widgets.sidebar_state(
        widgets.run_on_view(),
        upload_pending=page.title == PAGES[0].title and state.upload_pending(),
    )
state.sync_url()

page.run()
