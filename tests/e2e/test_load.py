"""Many sessions open one run's arrow field at the same moment: five browsers, and twenty
protocol clients (the server alone); every one gets its chart without an error. (Timing is the
bench's job: `flipscope bench load`.)"""

from __future__ import annotations

import pytest

from app.demo_runs import demo_runs_for
from app.jobs import RunStore
from benchmarks.load import open_sessions, speak_sessions

pytestmark = pytest.mark.slow


def test_five_sessions_at_once_all_render_the_arrow_field(server, server_runs):
    run_id = demo_runs_for(RunStore(server_runs), "moons")["emap"]
    # Generous bounds: the five browsers share the machine's cores with the server.
    sessions = open_sessions(f"{server}/arrows?run={run_id}", 5, timeout=240, budget=300)
    assert len(sessions) == 5
    failed = [f"session {s.index}: {s.error}" for s in sessions if not s.ok]
    assert not failed, failed
    assert all(s.seconds is not None and s.requests > 0 for s in sessions)


def test_twenty_protocol_sessions_at_once_all_get_the_figure(server, server_runs):
    run_id = demo_runs_for(RunStore(server_runs), "moons")["emap"]
    sessions = speak_sessions(f"{server}/arrows?run={run_id}", 20, timeout=240, budget=300)
    failed = [f"session {s.index}: {s.error}" for s in sessions if not s.ok]
    assert not failed, failed
    assert all(s.seconds is not None and s.server_seconds is not None for s in sessions)
