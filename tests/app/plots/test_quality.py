"""Quality cards as tables (pages and the HTML report): the best in bold, the baseline beside,
flags and failures said, every user-controlled text escaped."""

from __future__ import annotations

import re

from app.plots.export import run_report_html
from app.plots.quality import compare_html, compare_markdown, compare_rows
from explainers.models import SklearnModel
from explainers.quality import quality_card
from tests.factories import emap_like_moons


def _cards():
    from sklearn.ensemble import RandomForestClassifier

    from datasets import load_dataset

    data = load_dataset("moons")
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(data.X_train, data.y_train)
    model = SklearnModel(forest, data.class_names)
    exp = emap_like_moons(n=80)
    return exp, {
        "EMAP": quality_card(exp, data, model),
        "<img src=x onerror=alert(1)>": quality_card(exp, data, model, seed=1),
    }


def test_rows_mark_the_best_by_the_metrics_direction_and_carry_the_baseline():
    _, cards = _cards()
    rows = {r.metric: r for r in compare_rows(cards)}
    labels = list(cards)
    for name, row in rows.items():
        values = [cards[label]["metrics"][name]["value"] for label in labels]
        assert row.values == values
        known = [v for v in values if v is not None]
        if len(known) == 2 and known[0] != known[1]:
            lower = cards["EMAP"]["metrics"][name]["better"] == "lower"
            want = values.index(min(known) if lower else max(known))
            assert row.best == want, name
    assert rows["deletion_auc"].baseline_kind == "random"
    assert rows["deletion_auc"].baseline == cards["EMAP"]["metrics"]["deletion_auc"]["baseline"]
    assert rows["proximity_l1"].baseline_kind == "nearest real example"
    assert rows["deletion_auc"].help.startswith("lower is better: ")


def test_the_report_holds_the_table_escaped_with_flags_and_missing_cards():
    exp, cards = _cards()
    cards["EMAP"]["flags"] = [
        {"metric": "deletion_auc", "level": "warning", "message": "beats <b>nothing</b>"}
    ]
    quality = {**cards, "SHAP": None, "LIME": {"error": "the quality card could not be computed"}}
    page = run_report_html({"id": "r1", "kind": "emap"}, exp, {}, quality=quality)
    assert "<h2>Quality</h2>" in page
    table = compare_html(quality)
    assert table in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<b>nothing</b>" not in page and "beats &lt;b&gt;nothing&lt;/b&gt;" in page
    assert re.search(r'<th title="lower is better: [^"]+">deletion_auc</th>', page)
    assert "<td><b>" in page  # the best of each metric in bold
    assert "saved without a quality card" in page and "could not be computed" in page
    markdown = compare_markdown(quality)
    assert "\\<img src\\=x" in markdown and not re.search(r"(?<!\\)<", markdown)
    assert markdown.splitlines()[0].endswith("| baseline | how to read it |")
