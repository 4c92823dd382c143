"""PNG export through kaleido + Chromium, and the self-contained HTML report."""

from __future__ import annotations

import re
import struct

import plotly.graph_objects as go
import pytest

from app.plots.arrows import arrow_field_figure
from app.plots.export import ExportUnavailable, chromium_path, figure_png, run_report_html
from tests.factories import points_explanation


@pytest.mark.skipif(
    chromium_path() is None, reason="no chromium/chrome binary installed (apt-get install chromium)"
)
def test_png_export_returns_png_bytes_of_the_asked_size():
    fig = arrow_field_figure(points_explanation(200), k_pct=10)
    png = figure_png(fig, width=400, height=300, scale=1)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # IHDR
    assert (width, height) == (400, 300)
    assert len(png) > 5_000, "an arrow field is not a blank image"


def test_png_export_without_a_browser_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.delenv("FLIPSCOPE_CHROMIUM", raising=False)
    with pytest.raises(ExportUnavailable, match="apt-get install chromium"):
        figure_png(go.Figure())


def test_report_is_self_contained_and_escaped():
    e = points_explanation(50)
    e.provenance.note = "<script>alert(1)</script>"
    figs = {"Arrow field": arrow_field_figure(e), "Bars": go.Figure(go.Bar(x=["a"], y=[1]))}
    record = {
        "id": "abcDEF1234567890xyz",
        "kind": "emap",
        "status": "succeeded",
        "seconds": 3.5,
        "created_at": 1.7e9,
    }
    html = run_report_html(record, e, figs)
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, flags=re.I), "no external scripts"
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']https?:", html, flags=re.I), (
        "no external styles"
    )
    assert html.count("plotly.js v") == 1, "plotly.js embedded exactly once"
    assert html.count('class="plotly-graph-div"') == 2
    assert "abcDEF1234567890xyz" in html and "Arrow field" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)" in html
