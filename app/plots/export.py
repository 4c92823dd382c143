"""Exports for sharing: PNG of a figure, and a self-contained one-page HTML report of a run.

PNG export uses kaleido 1.x, which drives an installed Chromium through the DevTools protocol.
We find the browser ourselves (``FLIPSCOPE_CHROMIUM``, kaleido's own ``BROWSER_PATH``, then
``chromium``/``chromium-browser``/``google-chrome`` on ``PATH``; Debian: ``apt-get install
chromium``) and hand its path to kaleido; MathJax is switched off so no CDN is contacted.

The HTML report embeds plotly.js inline once (about 4.5 MB) and every figure after it, so it
opens offline and can be mailed as one file: no ``<script src="http...">`` anywhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import html
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from app.analysis import status_counts
from explainers.base import param_specs
from explainers.explanation import Explanation
from explainers.registry import METHODS, canonical_kind

if TYPE_CHECKING:
    from app.plots.report import ReportFigure

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ExportUnavailable(RuntimeError):
    """PNG export cannot run here (no Chromium); the message says how to fix it."""


def chromium_path() -> str | None:
    """The Chromium/Chrome executable kaleido should drive, or None when none is installed."""
    for var in ("FLIPSCOPE_CHROMIUM", "BROWSER_PATH"):
        value = os.environ.get(var)
        if value and Path(value).is_file() and os.access(value, os.X_OK):
            return value
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _kaleido_options() -> dict[str, Any]:
    path = chromium_path()
    if path is None:
        raise ExportUnavailable(
            "PNG export needs Chromium or Chrome, and none was found. Install it (Debian/Ubuntu: "
            "`apt-get install chromium`) or point FLIPSCOPE_CHROMIUM at the browser executable. "
            "The interactive chart's camera icon also saves a PNG from your browser."
        )
    # No MathJax: kaleido would otherwise fetch it from a CDN, which fails offline.
    return {"path": path, "mathjax": False}


def _run(coro_factory) -> Any:
    """Run a coroutine to completion from sync code, also when called inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(coro_factory())).result()


# Presentation size: a 16:9 slide, 1920 x 1080 pixels (1280 x 720 layout pixels at scale 1.5,
# so the print-size fonts of the report's figures stay readable on a projector).
PNG_WIDTH, PNG_HEIGHT, PNG_SCALE = 1280, 720, 1.5


def figures_png(
    figures: Sequence[go.Figure],
    width: int = PNG_WIDTH,
    height: int = PNG_HEIGHT,
    scale: float = PNG_SCALE,
) -> list[bytes]:
    """PNG bytes for each figure, rendered by one Chromium session (starting one costs ~1-3 s);
    by default at presentation size (``PNG_WIDTH`` x ``PNG_HEIGHT`` x ``PNG_SCALE``)."""
    import kaleido

    kopts = _kaleido_options()
    opts = {"format": "png", "width": int(width), "height": int(height), "scale": float(scale)}

    async def render() -> list[bytes]:
        async with kaleido.Kaleido(n=1, **kopts) as k:
            return [await k.calc_fig(fig, opts=dict(opts)) for fig in figures]

    try:
        out = _run(render)
    except ExportUnavailable:
        raise
    except Exception as exc:  # kaleido/choreographer raise many types; say what failed and where
        raise ExportUnavailable(
            f"PNG export failed in Chromium ({kopts['path']}): {type(exc).__name__}: {exc}"
        ) from exc
    for b in out:
        if not isinstance(b, bytes | bytearray) or not bytes(b).startswith(PNG_MAGIC):
            raise ExportUnavailable("kaleido returned something that is not a PNG")
    return [bytes(b) for b in out]


def figure_png(
    fig: go.Figure, width: int = PNG_WIDTH, height: int = PNG_HEIGHT, scale: float = PNG_SCALE
) -> bytes:
    """The figure as PNG bytes (``scale`` above 1 gives a sharp image on high-density screens)."""
    return figures_png([fig], width=width, height=height, scale=scale)[0]


# --------------------------------------------------------------------------- HTML report
_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.92rem; }
td, th { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } code { font-size: 0.85rem; }
.figure { margin: 0.5rem 0 2rem 0; } .how { color: #333; max-width: 60rem; }
h3 { font-size: 1rem; margin-top: 1.2rem; } .notes { background: #f7f9fc; padding: 0.2rem 1rem; } footer { color: #888; font-size: 0.8rem; margin-top: 3rem; }
"""


def _record_dict(run_record: Any) -> dict[str, Any]:
    if run_record is None:
        return {}
    if isinstance(run_record, Mapping):
        return dict(run_record)
    if hasattr(run_record, "to_dict"):
        return dict(run_record.to_dict())
    if hasattr(run_record, "__dict__"):
        return dict(vars(run_record))
    raise TypeError(f"run_record must be a mapping or a Run, got {type(run_record).__name__}")


def _value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.4g}"
    if isinstance(v, Mapping | list | tuple):
        return f"<code>{html.escape(json.dumps(v, default=str, ensure_ascii=False))}</code>"
    return html.escape(str(v))


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{_value(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _when(ts: Any) -> str | None:
    if not isinstance(ts, int | float):
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _method_title(kind: str) -> str:
    info = METHODS.get(canonical_kind(kind))
    return info.title if info else kind


def _param_rows(explanation: Explanation) -> list[tuple[str, Any]]:
    """The run's parameters, each named in words beside its name in the code (``lam``...)."""
    info = METHODS.get(canonical_kind(explanation.method))
    titles: dict[str, str] = {}
    if info is not None:
        try:
            titles = {s.name: s.title for s in param_specs(info.load_params())}
        except (ImportError, AttributeError):  # a method whose module is not installed here
            titles = {}
    return [
        (f"{titles[k]} ({k})" if k in titles else k, v)
        for k, v in sorted(explanation.params.items())
    ]


def run_report_html(
    run_record: Any,
    explanation: Explanation,
    figures: Sequence[ReportFigure] | Mapping[str, go.Figure],
    *,
    title: str | None = None,
    notes: str = "",
    data_name: str | None = None,
    model_name: str | None = None,
    quality: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> str:
    """One self-contained HTML page describing a run for stakeholders.

    Reading order: the title (method, data set), the analyst's notes, the quality section, a
    summary in words, each figure with "how to read this", then an appendix with the
    parameters, the raw metrics and the run record.

    Parameters
    ----------
    run_record : the run store's record (``Run`` or its ``to_dict()``), or None.
    explanation : the run's Explanation (method, parameters, metrics, provenance).
    figures : ``app.plots.report.ReportFigure``s in order, or ``{heading: figure}``.
    notes : the analyst's notes, shown first (escaped; blank lines start paragraphs).
    data_name, model_name : the data set and model as people name them (an upload's file
        name); default: the provenance's.
    quality : ``{method title: stored quality card or None}`` (``app.jobs.quality``): a "Quality"
        section after the notes with the side-by-side table of ``app.plots.quality.compare_html``.

    plotly.js is embedded inline once; figures follow as ``<div>`` + inline script, so the page
    needs no network.
    """
    from app.plots.report import ReportFigure

    rec = _record_dict(run_record)
    if isinstance(figures, Mapping):
        items = [ReportFigure(k, k, "", f) for k, f in figures.items()]
    else:
        items = list(figures)
    prov = explanation.provenance
    method = _method_title(explanation.method)
    data = data_name or prov.dataset
    model = model_name or prov.model
    heading = title or f"{method} on {data}"
    summary: list[tuple[str, Any]] = [
        ("Method", method),
        ("Data set", data),
        ("Model explained", model),
        ("Rows explained", f"{explanation.n:,}"),
        ("Classes", ", ".join(explanation.class_names)),
    ]
    if explanation.success is not None and explanation.n:
        verified = " (verified)" if explanation.verified else ""
        summary.append(
            (f"Counterfactuals that flip the model{verified}", f"{explanation.success.mean():.1%}")
        )
    counts = status_counts(explanation)
    if counts is not None and explanation.raw_success is not None and explanation.n:
        summary.append(
            ("Raw counterfactuals (the method's one pass) that flip the model",
             f"{explanation.raw_success.mean():.1%}")
        )  # fmt: skip
        summary.append(
            ("Verification: as is / repaired / failed",
             f"{counts['as is']} / {counts['repaired']} / {counts['failed']}")
        )  # fmt: skip
        if counts["from a training image"]:
            summary.append(
                ("Verified counterfactuals made from a training image (not by the method)",
                 f"{counts['from a training image']}")
            )  # fmt: skip
    finished = _when(rec.get("finished_at"))
    if finished:
        summary.append(("Finished", finished))
    if prov.note:
        summary.append(("Note", prov.note))
    run_rows = [
        ("run id", rec.get("id")),
        ("kind", rec.get("kind")),
        ("status", rec.get("status")),
        ("device", rec.get("device") or prov.device),
        ("seconds", rec.get("seconds") if rec.get("seconds") is not None else prov.seconds),
        ("created", _when(rec.get("created_at"))),
        ("data set (spec)", rec.get("dataset") or prov.dataset),
        ("model (spec)", rec.get("model") or prov.model),
        ("seed", prov.seed),
        ("version", prov.version),
    ]
    run_rows = [(k, v) for k, v in run_rows if v not in (None, {}, "")]
    params = _param_rows(explanation)
    metrics = sorted(explanation.metrics.items())

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(heading)}</title>",
        f"<style>{_CSS}</style>",
        # plotly.js once, inline: the report must open without a network.
        f'<script type="text/javascript">{get_plotlyjs()}</script>' if items else "",
        "</head><body>",
        f"<h1>{html.escape(heading)}</h1>",
        f'<p class="sub">Model: {html.escape(str(model))}. Generated '
        f"{html.escape(_when(dt.datetime.now(tz=dt.UTC).timestamp()) or '')}.</p>",
    ]
    if notes.strip():
        paragraphs = [p.strip() for p in notes.split("\n\n") if p.strip()]
        parts += ["<h2>Notes from the analyst</h2>", '<section class="notes">']
        parts += [f"<p>{html.escape(p)}</p>" for p in paragraphs]
        parts.append("</section>")
    if quality:
        from app.plots.quality import compare_html

        parts += ['<section id="quality">', "<h2>Quality</h2>", compare_html(quality), "</section>"]
    parts += ["<h2>Summary</h2>", _table(summary)]
    if rec.get("error"):
        parts += ["<h2>Error</h2>", f"<pre>{html.escape(str(rec['error']))}</pre>"]
    for item in items:
        div = pio.to_html(
            item.figure,
            full_html=False,
            include_plotlyjs=False,
            include_mathjax=False,
            config={"displaylogo": False, "responsive": True},
        )
        parts.append(f'<h2 id="fig-{html.escape(item.slug)}">{html.escape(item.title)}</h2>')
        if item.how_to_read:
            parts.append(
                f'<p class="how"><b>How to read this:</b> {html.escape(item.how_to_read)}</p>'
            )
        parts.append(f'<div class="figure">{div}</div>')
    appendix = [
        ("Parameters", params),
        ("Raw metrics", metrics),
        ("Run record", run_rows),
    ]
    appendix = [(h, rows) for h, rows in appendix if rows]
    if appendix:
        parts.append('<h2 class="appendix">Appendix</h2>')
        for letter, (h, rows) in zip("ABCDEF", appendix, strict=False):
            parts += [f"<h3>{letter}. {html.escape(h)}</h3>", _table(rows)]
    parts += [
        "<footer>Made with Flipscope. Figures are interactive: hover for values, drag to zoom, "
        "double-click to reset.</footer>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)
