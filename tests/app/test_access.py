"""The one owner check (app.access): the rule table, the gate over real stores, and every path
behind it that is not a page: job submission, cancel, retry, delete, the worker's reads."""

from __future__ import annotations

import pytest

from app.access import (
    CANCEL,
    DELETE,
    EXPORT,
    RETRY,
    UNKNOWN_OWNER,
    USE,
    VIEW,
    Action,
    Gate,
    NotYours,
    allowed,
)
from app.jobs import runtime
from app.jobs.huey_backend import HueyBackend, JobLimitError, make_huey
from app.jobs.resolve import Resolver, SpecError
from app.jobs.store import CANCELLED, FAILED, QUEUED, SUCCEEDED, RunStore, this_worker
from app.uploads import UploadStore
from datasets import load_dataset

ADA, BOB = "ada@example.org", "bob@example.org"
EVERYTHING = set(Action)


@pytest.mark.parametrize(
    ("user", "owner", "linked", "may"),
    [
        (None, ADA, False, EVERYTHING),  # sign-in off: every visitor may do everything
        (None, None, False, EVERYTHING),
        (None, UNKNOWN_OWNER, False, EVERYTHING),  # the operator reaches a damaged record
        (ADA, ADA, False, EVERYTHING),  # the owner
        (ADA, ADA, True, EVERYTHING),
        (BOB, None, False, {VIEW, USE, EXPORT}),  # demo runs, built-in data: public
        (BOB, None, True, {VIEW, USE, EXPORT}),
        (BOB, ADA, True, {VIEW}),  # a share link grants viewing that run, nothing else
        (BOB, ADA, False, set()),  # someone else's, without its link
        (BOB, UNKNOWN_OWNER, True, set()),  # a record nobody can read belongs to nobody
        (ADA, UNKNOWN_OWNER, False, set()),
        (BOB, "bob@example.org.evil", False, set()),  # owners match exactly
    ],
)
def test_rule_table(user, owner, linked, may):
    assert {a for a in Action if allowed(user, a, owner, linked=linked)} == may


def _finished(store: RunStore, owner: str | None, kind: str = "emap", status=SUCCEEDED) -> str:
    run = store.create(kind, dataset={"name": "moons"}, model={"demo": "moons"}, owner=owner)
    if status == QUEUED:
        return run.id
    if status == CANCELLED:
        store.request_cancel(run.id)
        return run.id
    worker = this_worker()
    assert store.start(run.id, worker)
    store.finish(run.id, worker, status, error="boom" if status == FAILED else None)
    return run.id


@pytest.fixture
def site(data_dir, monkeypatch):
    """A run store and an upload store under the data directory, with runs of Ada's, Bob's and
    nobody's, and Ada's uploaded data set and model."""
    from tests.app.views.prepared import upload_with_model

    monkeypatch.delenv("FLIPSCOPE_RUNS_DIR", raising=False)
    monkeypatch.delenv("FLIPSCOPE_QUEUE", raising=False)
    store = RunStore(data_dir / "runs")
    uploads = UploadStore(data_dir / "uploads")
    data_a, model_a = upload_with_model(uploads, ADA)
    site = {
        "store": store,
        "uploads": uploads,
        "data_a": data_a,
        "model_a": model_a,
        "ada": _finished(store, ADA),
        "ada_failed": _finished(store, ADA, status=FAILED),
        "ada_queued": _finished(store, ADA, status=QUEUED),
        "bob": _finished(store, BOB),
        "demo": _finished(store, None),
    }
    return site


def test_a_refusal_does_not_tell_whether_the_id_exists(site):
    bob = Gate(BOB, site["store"], site["uploads"])
    missing_run, missing_upload = "A" * 22, "B" * 16
    messages = []
    for what, ident, lookup in [
        ("run", site["ada"], bob.run),
        ("run", missing_run, bob.run),
        ("upload", site["data_a"], bob.upload),
        ("upload", missing_upload, bob.upload),
    ]:
        with pytest.raises(NotYours) as info:
            lookup(ident)
        messages.append(str(info.value).replace(ident, "ID"))
        assert str(info.value) == f"no {what} '{ident}', or it is not yours"
    assert messages[0] == messages[1] and messages[2] == messages[3]
    # An id that is not an id is not echoed (it could carry Markdown into a page).
    with pytest.raises(NotYours, match=r"^no upload with that id, or it is not yours$"):
        bob.upload("[x](https://evil.example/)")
    with pytest.raises(NotYours, match=r"^no run with that id, or it is not yours$"):
        bob.run("../../etc/passwd")


def test_the_gate_lists_and_opens_only_what_the_user_may_see(site):
    store = site["store"]
    bob, ada = Gate(BOB, store, site["uploads"]), Gate(ADA, store, site["uploads"])
    assert {r.id for r in bob.runs()} == {site["bob"], site["demo"]}
    assert {r.id for r in ada.runs()} == {
        site["ada"], site["ada_failed"], site["ada_queued"], site["demo"],
    }  # fmt: skip
    assert {r.id for r in Gate(None, store).runs()} == {r.id for r in store.list()}
    assert bob.run(site["demo"], USE).owner is None
    with pytest.raises(NotYours):
        bob.run(site["demo"], DELETE)  # public means view and use, not change
    assert ada.upload(site["data_a"], USE).owner == ADA
    for action in (VIEW, USE):
        with pytest.raises(NotYours):
            bob.upload(site["model_a"], action)


def test_a_share_token_opens_one_run_for_viewing_only(site):
    store = site["store"]
    ada = Gate(ADA, store)
    token = ada.share_token(store.get(site["ada"]))
    assert token and ada.share_token(store.get(site["ada"])) == token  # made once, then kept
    assert Gate(BOB, store).share_token(store.get(site["ada"])) is None  # not passed on by others
    assert (
        Gate(None, store).share_token(store.get(site["ada"])) is None
    )  # nothing to pass without sign-in
    linked = Gate(BOB, store, links={site["ada"]: token})
    assert linked.run(site["ada"]).id == site["ada"]
    assert linked.share_token(store.get(site["ada"])) == token
    assert site["ada"] in {r.id for r in linked.runs()}
    assert site["ada"] not in {r.id for r in linked.runs(action=USE)}
    for action in (USE, CANCEL, RETRY, DELETE, EXPORT):
        with pytest.raises(NotYours):
            linked.run(site["ada"], action)
    # The token is the run's own: not another run's, not a guess, not the run id.
    for links in (
        {site["ada_failed"]: token},
        {site["ada"]: token[:-1] + ("A" if token[-1] != "A" else "B")},
        {site["ada"]: site["ada"]},
        {site["ada"]: ""},
    ):
        with pytest.raises(NotYours):
            Gate(BOB, store, links=links).run(next(iter(links)))


def test_a_damaged_record_is_not_made_public(site):
    store = site["store"]
    (store.run_dir(site["ada"]) / "run.json").write_text("{ not json")
    assert store.get(site["ada"]).owner is None  # what the store can tell: nothing
    for user in (BOB, ADA):
        with pytest.raises(NotYours):
            Gate(user, store).run(site["ada"])
    assert Gate(None, store).run(site["ada"]).status == FAILED


# --------------------------------------------------------------------------- the job backend
@pytest.fixture
def backend(site, data_dir):
    return HueyBackend(make_huey(None, data_dir), site["store"])


def test_jobs_on_another_users_uploads_and_runs_are_refused(site, backend):
    store = site["store"]
    before = {r.id for r in store.list()}
    upload = {"upload": site["data_a"]}
    for dataset, model, params in [
        (upload, None, None),  # blackbox training on Ada's data
        (upload, {"upload": site["model_a"]}, {"rows": 5}),
        ({"name": "moons"}, {"run": site["ada"]}, {"rows": 5}),
        ({"name": "moons"}, {"emap_run": site["ada"]}, {"rows": 5}),
        ({"name": "moons"}, {"demo": "moons"}, {"rows": 5, "surrogate": f"emap_run:{site['ada']}"}),
    ]:
        kind = "blackbox" if model is None else ("ig" if "surrogate" in params else "lime")
        with pytest.raises(NotYours, match="or it is not yours"):
            backend.submit(kind, dataset=dataset, model=model, params=params, owner=BOB)
    assert {r.id for r in store.list()} == before  # nothing was queued
    # The owner, a public run, and the operator may.
    backend.submit("blackbox", dataset=upload, owner=ADA)
    backend.submit("lime", dataset="moons", model={"run": site["demo"]}, owner=BOB)
    backend.submit("blackbox", dataset=upload)


def test_another_users_run_cannot_be_read_cancelled_retried_or_deleted(site, backend):
    store = site["store"]
    records = {k: store.get(site[k]).to_dict() for k in ("ada", "ada_failed", "ada_queued")}
    for call, key in [
        (backend.status, "ada"),
        (backend.result, "ada"),
        (backend.cancel, "ada_queued"),
        (backend.retry, "ada_failed"),
        (backend.delete, "ada"),
    ]:
        with pytest.raises(NotYours, match=f"no run '{site[key]}', or it is not yours"):
            call(site[key], user=BOB)
    # Nothing changed: not the records, not the cancel flag, no new run.
    assert {k: store.get(site[k]).to_dict() for k in records} == records
    assert len(store.list()) == 5
    with pytest.raises(NotYours):  # a public run is not everybody's to delete either
        backend.delete(site["demo"], user=BOB)
    # The owner may.
    assert backend.cancel(site["ada_queued"], user=ADA).status == CANCELLED
    assert backend.status(backend.retry(site["ada_failed"], user=ADA), user=ADA).owner == ADA
    backend.delete(site["ada"], user=ADA)
    assert not store.exists(site["ada"])


def test_a_retry_is_charged_to_the_user_who_asks(site, backend, monkeypatch):
    monkeypatch.setenv("FLIPSCOPE_MAX_JOBS_PER_USER", "1")
    store = site["store"]
    bob_failed = _finished(store, BOB, status=FAILED)
    bob_cancelled = _finished(store, BOB, status=CANCELLED)
    # Ada is at her cap (her queued run); Bob's retry does not count against it...
    new = backend.retry(bob_failed, user=BOB)
    assert store.get(new).owner == BOB and store.get(new).retry_of == bob_failed
    # ...it counts against Bob's: his next retry is over his cap.
    with pytest.raises(JobLimitError, match="limit is 1"):
        backend.retry(bob_cancelled, user=BOB)
    with pytest.raises(NotYours):
        backend.retry(site["ada_failed"], user=BOB)
    assert store.get(site["ada_failed"]).retried_by is None
    # The operator's retry keeps the owner, so Ada's run never turns public.
    monkeypatch.setenv("FLIPSCOPE_MAX_JOBS_PER_USER", "5")
    assert store.get(backend.retry(site["ada_failed"])).owner == ADA


# --------------------------------------------------------------------------- the worker
def test_the_worker_reads_nothing_the_jobs_owner_may_not_use(site):
    store = site["store"]
    # A job that reached the queue without submit's check (an old record, a queue written to
    # directly): Bob's job on Ada's data set fails with the refusal, having read nothing.
    run = store.create("blackbox", dataset={"upload": site["data_a"]}, owner=BOB)
    assert runtime.execute(run.id, store) == FAILED
    assert store.get(run.id).error == f"no upload '{site['data_a']}', or it is not yours"
    bob, ada = Resolver(store, Gate(BOB, store)), Resolver(store, Gate(ADA, store))
    with pytest.raises(SpecError, match="or it is not yours"):
        bob.dataset({"upload": site["data_a"]})
    assert ada.dataset({"upload": site["data_a"]}).n_classes == 2
    moons = load_dataset("moons")
    for spec in ({"run": site["ada"]}, {"emap_run": site["ada"]}):
        with pytest.raises(SpecError, match="or it is not yours"):
            bob.model(spec, {"name": "moons"}, moons)
    with pytest.raises(SpecError, match="or it is not yours"):
        bob.model({"upload": site["model_a"]}, {"upload": site["data_a"]}, None)
    with pytest.raises(SpecError, match="or it is not yours"):
        bob.surrogate({"emap_run": site["ada"]}, {"demo": "moons"}, {"name": "moons"}, moons)


def test_the_html_report_does_not_carry_the_share_token(site):
    """A report names the run and its uploads (ids are not secrets any more) but never the token
    that opens the run to whoever holds it."""
    from app.plots.export import run_report_html
    from tests.app.views.prepared import finished_run
    from tests.factories import emap_like_moons

    store = site["store"]
    run_id = finished_run(store, "emap", "moons", emap_like_moons(20), owner=ADA)
    token = store.share_token(run_id)
    html = run_report_html(store.get(run_id), store.load_explanation(run_id), {})
    assert run_id in html and token not in html
