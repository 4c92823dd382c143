"""The Quality panel and the side-by-side table read the card each job stored with its run."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from app.jobs.store import QUALITY, write_quality
from app.plots.quality import fmt
from app.text import md
from datasets import load_dataset
from explainers.blackbox import demo_model
from explainers.quality import quality_card
from tests.app.views.prepared import VIEWS, finished_run
from tests.factories import emap_like_moons


def _card_for(env, run_id, exp):
    """The card the job would store (same function, same black box), written with the run."""
    from app.config import settings

    card = quality_card(exp, load_dataset("moons"), demo_model("moons", settings().cache_dir))
    card.update(job_seconds=10.0, budget_share=card["seconds"] / 10.0)
    write_quality(env.artifacts_dir(run_id) / QUALITY, card)
    return env.load_quality(run_id)  # as stored: what the page reads


def test_the_panel_shows_each_figure_beside_its_baseline_with_its_flags(env):
    exp = emap_like_moons(n=120)
    run_id = finished_run(env, "emap", "moons", exp)
    card = _card_for(env, run_id, exp)
    at = AppTest.from_file(str(VIEWS / "arrows.py"), default_timeout=180)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception, at.exception
    assert "Quality" in [s.value for s in at.subheader]
    tiles = {m.label: m for m in at.metric}
    for name, metric in card["metrics"].items():
        assert tiles[name].value == fmt(metric["value"])
        assert tiles[name].help and metric["better"] in tiles[name].help  # how to read it
    captions = " ".join(c.value for c in at.caption).replace("\\", "")  # Markdown escapes
    deletion = card["metrics"]["deletion_auc"]
    assert f"random {fmt(deletion['baseline'])}" in captions
    proximity = card["metrics"]["proximity_l1"]
    assert f"nearest real example {fmt(proximity['baseline'])}" in captions
    warnings = [w.value.replace("\\", "") for w in at.warning]
    for flag in card["flags"]:
        assert any(flag["message"][:40] in w for w in warnings), (flag, warnings)


def test_a_run_without_a_card_says_how_to_get_one_and_a_failed_card_its_error(env):
    exp = emap_like_moons(n=60)
    old = finished_run(env, "emap", "moons", exp)
    at = AppTest.from_file(str(VIEWS / "triage.py"), default_timeout=120)
    at.query_params["run"] = old
    at.run()
    assert not at.exception, at.exception
    assert any("saved without a quality card" in i.value for i in at.info)
    failed = finished_run(env, "emap", "moons", exp)
    write_quality(env.artifacts_dir(failed) / QUALITY, {"error": "the card failed: <b>x</b>"})
    at = AppTest.from_file(str(VIEWS / "triage.py"), default_timeout=120)
    at.query_params["run"] = failed
    at.run()
    assert not at.exception, at.exception
    assert [w.value for w in at.warning] == [md("the card failed: <b>x</b>")]  # escaped


def test_compare_shows_methods_side_by_side_best_in_bold_and_the_baseline(env):
    exp = emap_like_moons(n=100)
    emap = finished_run(env, "emap", "moons", exp)
    lime = exp.subset(slice(0, 100))
    lime.method = "lime"
    lime_id = finished_run(env, "lime", "moons", lime)
    cards = {"EMAP": _card_for(env, emap, exp), "LIME": _card_for(env, lime_id, lime)}
    at = AppTest.from_file(str(VIEWS / "compare.py"), default_timeout=180)
    at.query_params["run"] = emap
    at.run()
    assert not at.exception, at.exception
    table = next(m.value for m in at.markdown if "| metric |" in m.value)
    header = table.splitlines()[0]
    assert "EMAP" in header and "LIME" in header and "baseline" in header
    assert "how to read it" in header
    row = next(line for line in table.splitlines() if line.startswith("| deletion_auc |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    values = {"EMAP": cards["EMAP"], "LIME": cards["LIME"]}
    columns = [c.strip() for c in header.strip("|").split("|")]
    order = columns[1:3]
    assert sorted(order) == ["EMAP", "LIME"]
    got = {label: cells[1 + i] for i, label in enumerate(order)}
    dele = {k: v["metrics"]["deletion_auc"]["value"] for k, v in values.items()}
    best = min(dele, key=dele.get)
    assert got[best] == f"**{fmt(dele[best])}**"
    assert "random" in cells[1 + len(order)]
