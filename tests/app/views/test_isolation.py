"""Two signed-in users on the pages (AppTest, a faked ``st.user``): Bob holds the ids of Ada's
uploads and runs (ids leak: reports, run lists, logs). Nothing of Ada's opens for him, and
nothing of hers can be changed or charged through him; a share link Ada copied opens one run
for viewing only. Without sign-in every visitor sees everything (the documented default)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from streamlit.testing.v1 import AppTest

from app.jobs import FAILED, QUEUED
from app.jobs.store import this_worker
from app.uploads import UploadStore
from tests.app.test_auth import AUTH
from tests.app.views.prepared import finished_run, upload_with_model
from tests.factories import emap_like_moons, emap_like_upload
from tests.markdown import as_text

VIEWS = Path(__file__).resolve().parents[3] / "app" / "views"
ADA, BOB = "ada@example.org", "bob@example.org"


@pytest.fixture
def site(env, model_cache, monkeypatch, tmp_path):
    """Ada's and Bob's runs and uploads. The data directory is this test's own (uploads start
    empty) but shares the session's model cache (demo forests train once)."""
    data = tmp_path / "data"
    (model_cache / "cache").mkdir(exist_ok=True)
    data.mkdir()
    (data / "cache").symlink_to(model_cache / "cache")
    monkeypatch.setenv("FLIPSCOPE_DATA_DIR", str(data))
    monkeypatch.setenv("FLIPSCOPE_ALLOWED_EMAILS", f"{ADA}, {BOB}")
    store, uploads = env, UploadStore(data / "uploads")
    data_a, model_a = upload_with_model(uploads, ADA, seed=0)
    data_b, _ = upload_with_model(uploads, BOB, seed=1)
    on_upload = emap_like_upload(uploads.dataset(data_a))
    ids = {
        "store": store,
        "data_a": data_a,
        "model_a": model_a,
        "data_b": data_b,
        "ada": finished_run(store, "emap", "moons", emap_like_moons(120), owner=ADA),
        "ada_upload": finished_run(
            store, "emap", {"upload": data_a}, on_upload, owner=ADA, model={"upload": model_a}
        ),
        "bob": finished_run(store, "emap", "moons", emap_like_moons(120, seed=1), owner=BOB),
    }
    queued = store.create("lime", dataset={"name": "moons"}, model={"demo": "moons"}, owner=ADA)
    failed = store.create("lime", dataset={"name": "moons"}, model={"demo": "moons"}, owner=ADA)
    worker = this_worker()
    store.start(failed.id, worker)
    store.finish(failed.id, worker, FAILED, error="boom")
    return {**ids, "ada_queued": queued.id, "ada_failed": failed.id}


def _page(view: str, user: str | None, **query: str) -> AppTest:
    at = AppTest.from_file(str(VIEWS / f"{view}.py"), default_timeout=120)
    if user is not None:
        at.secrets.update(AUTH)
        at.user = {"is_logged_in": True, "email": user}
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _shown(at: AppTest) -> str:
    """Everything a page put in front of its viewer: texts, pickers' options, tables, links."""
    parts = [str(e.value) for e in [*at.markdown, *at.caption, *at.info, *at.success, *at.code]]
    parts += [str(e.value) for e in [*at.error, *at.warning, *at.subheader, *at.title]]
    for box in at.selectbox:
        parts += [str(o) for o in box.options] + [str(box.value)]
    for frame in at.dataframe:
        parts.append(frame.value.to_string())
    return "\n".join(parts)


def _errors(at: AppTest) -> str:
    """The error boxes' text as a browser shows it (user text in them is Markdown-escaped)."""
    return " ".join(as_text(str(e.value)) for e in at.error)


def _buttons(at: AppTest) -> list[str]:
    return [b.label for b in at.button] + [b.label for b in at.get("download_button")]


def _share_token(at: AppTest) -> str:
    """The share= of the link a page shows its viewer."""
    (link,) = [str(c.value) for c in at.code if "run=" in str(c.value)]
    return parse_qs(urlparse(link).query)["share"][0]


@pytest.mark.parametrize("view", ["arrows", "triage", "report", "compare", "tabular", "explain"])
def test_a_run_id_alone_opens_nothing_of_another_user(site, view):
    for key in ("ada", "ada_upload"):
        at = _page(view, BOB, run=site[key])
        shown = _shown(at).replace(f"'{site[key]}'", "")  # the refusal names the id it was given
        assert site[key] not in shown and site[key][:8] not in shown, view
        assert at.query_params.get("run") in (None, site["bob"]), view
        if view == "report":  # nothing of Ada's to download: Bob's own run is the one offered
            assert at.selectbox(key="rep_run").value == site["bob"]
        assert f"no run '{site[key]}', or it is not yours" in _errors(at)
    # An id that exists nowhere gets the same words.
    missing = "Q" * 22
    assert f"no run '{missing}', or it is not yours" in _errors(_page(view, BOB, run=missing))


def test_another_users_runs_cannot_be_cancelled_or_retried_from_the_explain_page(site):
    store = site["store"]
    before = {r.id: r.to_dict() for r in store.list()}
    for key in ("ada_queued", "ada_failed"):
        at = _page("explain", BOB, run=site[key])
        assert "Cancel" not in _buttons(at) and "Retry" not in _buttons(at)
        table = at.dataframe[0].value
        assert site[key][:8] not in set(table["run"])  # Bob's run list holds his runs and demos
        assert set(table["run"]) == {site["bob"][:8]}
        assert f"no run '{site[key]}', or it is not yours" in _errors(at)
    assert {r.id: r.to_dict() for r in store.list()} == before  # Ada's runs untouched, none added
    assert store.get(site["ada_queued"]).status == QUEUED and not store.cancel_requested(
        site["ada_queued"]
    )


def test_another_users_upload_is_refused_on_the_data_and_explain_pages(site):
    data_a, model_a, data_b = site["data_a"], site["model_a"], site["data_b"]
    refusal = f"no upload '{data_a}', or it is not yours"
    at = _page("data_model", BOB, data=data_a, model=model_a)
    assert not at.metric and not at.get("plotly_chart") and not at.dataframe
    # No model can be bound to Ada's data set through Bob's page.
    assert [u.proto.label for u in at.get("file_uploader")] == ["Data set"]
    assert refusal in _errors(at)
    # Bob's own data set with Ada's model: the model is refused.
    at = _page("data_model", BOB, data=data_b, model=model_a)
    assert "Test accuracy" not in {m.label for m in at.metric}
    assert f"no upload '{model_a}', or it is not yours" in _errors(at)
    # No job on Ada's uploads: the Explain page offers no form.
    for query in ({"data": data_a, "model": model_a}, {"data": data_b, "model": model_a}):
        at = _page("explain", BOB, **query)
        assert not at.get("form") and not at.button
        assert "or it is not yours" in _errors(at)
    assert {r.dataset.get("upload") for r in site["store"].list()} == {None, data_a}
    # Ada herself opens them.
    at = _page("data_model", ADA, data=data_a, model=model_a)
    assert not at.error and "Test accuracy" in {m.label for m in at.metric}


def test_a_share_link_shows_one_run_read_only(site):
    store = site["store"]
    # Ada's own page shows her the link, with the run's share token.
    token = _share_token(_page("arrows", ADA, run=site["ada"]))
    assert token == store.get(site["ada"]).share_token
    # Bob opens it: Ada's arrow field, no refusal.
    at = _page("arrows", BOB, run=site["ada"], share=token)
    assert not at.error and at.selectbox(key="arrows_run").value == site["ada"]
    assert json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    assert _share_token(at) == token  # he may pass the same link on, nothing more
    # A run on Ada's uploads is drawn with her data set through the link...
    up_token = store.share_token(site["ada_upload"])
    at = _page("triage", BOB, run=site["ada_upload"], share=up_token)
    assert not at.error and "AUROC" in {m.label for m in at.metric}
    # ...but the link opens neither her upload nor a job on it.
    at = _page("data_model", BOB, data=site["data_a"], model=site["model_a"])
    assert "or it is not yours" in _errors(at) and not at.metric
    # Read-only: no export of the shared run, no cancel or retry of Ada's runs through links.
    at = _page("report", BOB, run=site["ada"], share=token)
    assert not at.get("download_button") and "shared with you to view" in _shown(at)
    for key, button in (("ada_queued", "Cancel"), ("ada_failed", "Retry")):
        at = _page("explain", BOB, run=site[key], share=store.share_token(site[key]))
        assert not at.error or "failed: boom" in _errors(at)
        assert site[key][:8] in _shown(at) and button not in _buttons(at)
    assert store.get(site["ada_queued"]).status == QUEUED
    assert store.get(site["ada_failed"]).retried_by is None
    # A link with another run's token, or a made-up one, is refused like the bare id.
    for bad in (up_token, re.sub(r"^.", lambda m: "A" if m.group() != "A" else "B", token)):
        at = _page("arrows", BOB, run=site["ada"], share=bad)
        assert f"no run '{site['ada']}', or it is not yours" in _errors(at)


def test_the_owner_keeps_full_use_of_her_runs(site):
    at = _page("explain", ADA, run=site["ada_failed"])
    assert "Retry" in _buttons(at)
    at.button(key="retry").click().run()
    assert not at.exception
    retried = site["store"].get(site["ada_failed"]).retried_by
    assert retried and site["store"].get(retried).owner == ADA
    at = _page("report", ADA, run=site["ada"])
    assert at.get("download_button")


def test_without_sign_in_every_visitor_sees_every_run(site, monkeypatch):
    monkeypatch.delenv("FLIPSCOPE_ALLOWED_EMAILS")
    at = _page("arrows", None, run=site["ada"])
    assert not at.error and at.selectbox(key="arrows_run").value == site["ada"]
    options = " ".join(at.selectbox(key="arrows_run").options)  # labels carry 8 id characters
    assert site["ada"][:8] in options and site["bob"][:8] in options
    assert "share=" not in _shown(at)  # nothing to share but the id
    at = _page("data_model", None, data=site["data_a"], model=site["model_a"])
    assert not at.error and "Test accuracy" in {m.label for m in at.metric}
    at = _page("explain", None, run=site["ada_queued"])
    assert "Cancel" in _buttons(at)
