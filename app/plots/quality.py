"""Quality cards as tables: one run's figures beside their baseline, and runs side by side (methods
as columns, metrics as rows, the best in bold, the baseline as a column), for the pages (Markdown)
and the HTML report. The cards are the ones the jobs stored (``app.jobs.quality``); nothing is
computed here. No streamlit import.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.text import md
from explainers.quality import METRIC_INFO

# Flags whose figure has no tile of its own are shown above the card's figures.
GENERAL = "general"


def fmt(value: Any) -> str:
    """A figure as text: three significant digits, "—" for a figure that could not be computed."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{float(value):.3g}"


def usable(card: Mapping[str, Any] | None) -> bool:
    """Whether a card holds figures (not missing, not a recorded failure)."""
    return bool(card) and not card.get("error") and bool(card.get("metrics"))


def flags_by_metric(card: Mapping[str, Any]) -> dict[str, list[str]]:
    """The card's flag messages by the figure they concern; ``GENERAL`` for those about no single
    figure shown (zero attributions, surrogate fidelity)."""
    shown = set(card.get("metrics") or {})
    out: dict[str, list[str]] = {}
    for flag in card.get("flags") or []:
        metric = flag.get("metric")
        out.setdefault(metric if metric in shown else GENERAL, []).append(str(flag["message"]))
    return out


def baseline_text(metric: Mapping[str, Any]) -> str:
    """``"random 0.412"``, or "" for a figure without a baseline."""
    if metric.get("baseline") is None:
        return ""
    return f"{metric.get('baseline_kind') or 'baseline'} {fmt(metric['baseline'])}"


def how_to_read(name: str, metric: Mapping[str, Any]) -> str:
    """One line: direction, then what the figure measures."""
    better = metric.get("better") or METRIC_INFO.get(name, ("", "", ""))[1]
    text = metric.get("help") or METRIC_INFO.get(name, ("", "", ""))[2]
    return f"{better} is better: {text}"


@dataclass(frozen=True)
class Row:
    """One metric across runs: ``values`` per column (method), the index of the best (None when
    fewer than two are known), and the baseline of the first card that has one."""

    metric: str
    values: list[float | None]
    best: int | None
    baseline: float | None
    baseline_kind: str | None
    help: str


def compare_rows(cards: Mapping[str, Mapping[str, Any] | None]) -> list[Row]:
    """Metrics as rows across ``{column label: card}``, in the card module's order."""
    usable_cards = {k: c for k, c in cards.items() if usable(c)}
    names = [
        n
        for n in METRIC_INFO
        if any(n in (c or {}).get("metrics", {}) for c in usable_cards.values())
    ]
    rows = []
    for name in names:
        entries = [
            (c or {}).get("metrics", {}).get(name) if usable(c) else None for c in cards.values()
        ]
        values = [None if e is None else e.get("value") for e in entries]
        first = next((e for e in entries if e is not None), {}) or {}
        better = first.get("better", METRIC_INFO[name][1])
        known = [(i, v) for i, v in enumerate(values) if v is not None]
        best = None
        if len(known) > 1:
            pick = min if better == "lower" else max
            best_value = pick(v for _, v in known)
            best = next(i for i, v in known if v == best_value)
        base = next((e for e in entries if e is not None and e.get("baseline") is not None), None)
        rows.append(
            Row(
                name, values, best,
                None if base is None else base["baseline"],
                None if base is None else base.get("baseline_kind"),
                how_to_read(name, first),
            )
        )  # fmt: skip
    return rows


def _missing(cards: Mapping[str, Mapping[str, Any] | None]) -> list[tuple[str, str]]:
    """(label, why) for the columns without figures."""
    out = []
    for label, card in cards.items():
        if not card:
            out.append((label, "this run was saved without a quality card; run the method again"))
        elif card.get("error"):
            out.append((label, str(card["error"])))
    return out


def compare_markdown(cards: Mapping[str, Mapping[str, Any] | None]) -> str:
    """The side-by-side table as Markdown (labels and messages escaped: they may name uploads)."""
    labels = list(cards)
    rows = compare_rows(cards)
    lines = []
    if rows:
        head = ["metric", *(md(label) for label in labels), "baseline", "how to read it"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in rows:
            cells = [f"**{fmt(v)}**" if i == row.best else fmt(v) for i, v in enumerate(row.values)]
            base = "" if row.baseline is None else f"{fmt(row.baseline)} ({md(row.baseline_kind)})"
            lines.append(f"| {row.metric} | " + " | ".join(cells) + f" | {base} | {md(row.help)} |")
    for label, why in _missing(cards):
        lines.append(f"\n{md(label)}: {md(why)}")
    return "\n".join(lines)


def compare_html(cards: Mapping[str, Mapping[str, Any] | None]) -> str:
    """The side-by-side table as HTML for the report: the best in bold, the baseline as a column,
    "how to read it" as a column and as the metric's tooltip; every text escaped; then each
    card's flags."""
    labels = list(cards)
    rows = compare_rows(cards)
    esc = html.escape
    parts = []
    if rows:
        head = "".join(f"<th>{esc(label)}</th>" for label in labels)
        parts.append(
            f"<table><tr><th>metric</th>{head}<th>baseline</th><th>how to read it</th></tr>"
        )
        for row in rows:
            cells = "".join(
                f"<td><b>{fmt(v)}</b></td>" if i == row.best else f"<td>{fmt(v)}</td>"
                for i, v in enumerate(row.values)
            )
            base = (
                ""
                if row.baseline is None
                else f"{fmt(row.baseline)} ({esc(str(row.baseline_kind))})"
            )
            parts.append(
                f'<tr><th title="{esc(row.help)}">{esc(row.metric)}</th>{cells}'
                f"<td>{base}</td><td>{esc(row.help)}</td></tr>"
            )
        parts.append("</table>")
    for label, card in cards.items():
        for flag in (card or {}).get("flags") or []:
            parts.append(
                f"<p><b>{esc(label)}, {esc(str(flag.get('metric')))}:</b> "
                f"{esc(str(flag.get('message')))}</p>"
            )
    for label, why in _missing(cards):
        parts.append(f"<p>{esc(label)}: {esc(why)}</p>")
    return "\n".join(parts)
