"""app.text: user text written into Markdown or a Plotly label shows as itself, never as markup."""

from __future__ import annotations

import re

import pytest

from app.text import md, plot_text, plot_texts
from tests.hostile import (
    FILE_NAME_PAYLOADS,
    MARKDOWN_PAYLOADS,
    PLOTLY_PAYLOADS,
    plotly_shows,
    shows_literally,
)
from tests.markdown import as_text


@pytest.mark.parametrize("payload", [*MARKDOWN_PAYLOADS.values(), *FILE_NAME_PAYLOADS])
def test_md_leaves_no_markup(payload):
    escaped = md(payload)
    assert shows_literally(escaped, payload), escaped
    # Once the escaped pairs are taken out, no character that could open a construct is left.
    bare = re.sub(r"\\[!-/:-@\[-`{-~]", "", escaped)
    assert not re.search(r"[!-/:-@\[-`{-~]", bare), bare
    # GFM links bare URLs and addresses in the text that is left once escapes are resolved.
    shown = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", escaped)
    assert not re.search(r"(?i)https?://|www\.|[\w.+-]@[\w-]", shown), shown


def test_md_joins_lines_so_no_block_starts():
    escaped = md("label\n# heading\r\n| a | b |\r- item")
    assert "\n" not in escaped and "\r" not in escaped
    assert escaped == r"label \# heading \| a \| b \| \- item"


def test_md_breaks_bare_urls_and_addresses_invisibly():
    for text in ("see http://a.example/x", "HTTPS://a.example", "www.a.example", "ada@a.example"):
        assert as_text(md(text)) == text
        assert "\u2060" in md(text)


def test_md_keeps_letters_digits_and_unicode():
    assert md("Älter als 30 ✓") == "Älter als 30 ✓"
    assert md(42) == "42"


@pytest.mark.parametrize("payload", [*PLOTLY_PAYLOADS, *MARKDOWN_PAYLOADS.values()])
def test_plot_text_writes_tags_as_entities(payload):
    assert plotly_shows(plot_text(payload), payload)


def test_plot_texts_escapes_each():
    assert plot_texts(["<b>a</b>", "<=50K"]) == ["&lt;b&gt;a&lt;/b&gt;", "&lt;=50K"]
