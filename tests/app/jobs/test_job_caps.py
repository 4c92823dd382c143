"""Job caps that hold without sign-in: per browser session (FLIPSCOPE_MAX_JOBS_PER_USER, like a
signed-in user) and for the whole instance (FLIPSCOPE_MAX_JOBS_TOTAL, which alone binds the
command line). No worker runs here: submitted jobs stay queued, as on a busy instance."""

from __future__ import annotations

import threading

import pytest

from app.cli import main
from app.jobs.huey_backend import HueyBackend, JobLimitError, make_huey
from app.jobs.store import CANCELLED, RunStore

SESSION_CAP = (
    "this browser session already has 4 jobs queued or running (the limit is 4, "
    "FLIPSCOPE_MAX_JOBS_PER_USER); wait for one to finish or cancel one"
)
TOTAL_CAP = (
    "the server already has 16 jobs queued or running (the limit is 16, "
    "FLIPSCOPE_MAX_JOBS_TOTAL); try again once some have finished"
)


@pytest.fixture
def backend(data_dir, monkeypatch):
    for var in ("FLIPSCOPE_MAX_JOBS_PER_USER", "FLIPSCOPE_MAX_JOBS_TOTAL"):
        monkeypatch.delenv(var, raising=False)  # the defaults: 4 per session, 16 in all
    return HueyBackend(make_huey(None, data_dir), RunStore(data_dir / "runs"))


def _try(backend, n, **who):
    """Submit ``n`` small jobs; (accepted run ids, refusal messages)."""
    accepted, refused = [], []
    for _ in range(n):
        try:
            accepted.append(
                backend.submit("blackbox", dataset="moons", params={"n_trees": 10}, **who)
            )
        except JobLimitError as exc:
            refused.append(str(exc))
    return accepted, refused


def test_twenty_submissions_without_sign_in_hold_the_caps(backend):
    # One browser session asks twenty times: four are queued.
    tab, refused = _try(backend, 20, session="tab-a")
    assert len(tab) == 4 and refused == [SESSION_CAP] * 16
    assert {backend.status(r).session for r in tab} == {"tab-a"}

    # Twenty fresh sessions (new tabs, another browser) ask once each: the instance stops at 16.
    others, refused = [], []
    for i in range(20):
        accepted, no = _try(backend, 1, session=f"tab-{i}")
        others, refused = others + accepted, refused + no
    assert len(others) == 12 and refused == [TOTAL_CAP] * 8
    assert len(backend.store.active()) == 16

    # The operator's command line (no session) is bound by the instance's cap alone.
    assert _try(backend, 1) == ([], [TOTAL_CAP])

    # A finished job frees a slot: for its session, and for everyone.
    backend.cancel(tab[0])
    assert backend.status(tab[0]).status == CANCELLED
    again, _ = _try(backend, 2, session="tab-a")
    assert len(again) == 1 and len(backend.store.active()) == 16
    backend.cancel(others[0])
    assert len(_try(backend, 1)[0]) == 1  # the command line takes the freed place

    # A retry counts towards the retrying session like a submission.
    with pytest.raises(JobLimitError, match="this browser session already has 4 jobs"):
        backend.retry(tab[0], session="tab-a")


def test_a_signed_in_user_is_capped_across_sessions(backend):
    first, _ = _try(backend, 2, owner="ada@example.org", session="laptop")
    second, refused = _try(backend, 3, owner="ada@example.org", session="phone")
    assert len(first) == 2 and len(second) == 2
    assert refused == [
        "you already have 4 jobs queued or running (the limit is 4, "
        "FLIPSCOPE_MAX_JOBS_PER_USER); wait for one to finish or cancel one"
    ]


def test_racing_submissions_do_not_overrun_the_cap(data_dir, monkeypatch):
    monkeypatch.setenv("FLIPSCOPE_MAX_JOBS_TOTAL", "5")
    results: list[tuple[list[str], list[str]]] = []

    def submit_three(i: int) -> None:
        own = HueyBackend(make_huey(None, data_dir), RunStore(data_dir / "runs"))
        results.append(_try(own, 3, session=f"racer-{i}"))

    threads = [threading.Thread(target=submit_three, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(len(accepted) for accepted, _ in results) == 5
    assert len(RunStore(data_dir / "runs").active()) == 5


def test_the_command_line_says_when_the_instance_is_full(data_dir, monkeypatch, capsys):
    monkeypatch.setenv("FLIPSCOPE_MAX_JOBS_PER_USER", "1")  # never applies to the operator
    monkeypatch.setenv("FLIPSCOPE_MAX_JOBS_TOTAL", "3")
    argv = ["jobs", "submit", "blackbox", "--dataset", "moons", "--param", "n_trees=10"]
    assert [main(argv) for _ in range(4)] == [0, 0, 0, 2]
    err = capsys.readouterr().err
    assert "error: the server already has 3 jobs queued or running (the limit is 3" in err
    assert "Traceback" not in err
