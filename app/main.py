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

from app import auth, state, text  # noqa: E402

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

sel = state.selection()
with st.sidebar:
    st.markdown("### Flipscope")
    st.caption("What is the smallest change that would flip this decision?")
    st.markdown(f"**Data:** {text.md(sel.label)}")

st.navigation(PAGES).run()
