"""Markup payloads for the text-escaping tests, and the checks that they show as literal text.

Every payload points at 198.51.100.7 (TEST-NET-2, never routed) or ``*.invalid``, so a test that
fails because one was rendered fetches nothing real.
"""

from __future__ import annotations

import html
import re

HOST = "198.51.100.7"

# One payload per construct that turns text into a link, an image or a fetch.
MARKDOWN_PAYLOADS = {
    "link": f"[claim your prize](http://{HOST}/win)",
    "image": f"![pixel](http://{HOST}/pixel.png)",
    "html image": f'<img src="http://{HOST}/raw.png">',
    "reference link": f"[see][r] [r]: http://{HOST}/ref",
    "autolink": f"<http://{HOST}/auto>",
    "bare url": f"www.flipscope-test.invalid http://{HOST}/bare",
    "entities": f"&lt;img src=x&gt; &#91;e&#93;&#40;http://{HOST}/entity&#41;",
    "emphasis and code": "**bold** _it_ `code` ~~gone~~",
    "heading": "# Heading | a | b |",
    "streamlit directives": f":red[alert] :material/home: $\\href{{http://{HOST}/m}}{{x}}$",
}
# File names cannot hold '/' (a path would be cut at it), so these use scheme-relative tricks.
FILE_NAME_PAYLOADS = (
    "![logo](https:flipscope-test.invalid)",
    "[open](javascript:alert(1))",
)
# Plotly's HTML subset: links, styled spans and line breaks; <img> it already shows as text.
PLOTLY_PAYLOADS = (
    f'<a href="http://{HOST}/plot">click</a>',
    '<span style="font-size:90px">big</span>',
    "<b>bold</b><br>line",
)

_ASCII_PUNCTUATION = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def markdown_literal(text: str) -> str:
    """The pattern of ``text`` written as literal Markdown: CommonMark shows a backslash-escaped
    ASCII punctuation character as itself and nothing else can start markup, so every such
    character of ``text`` must be escaped (line breaks may become spaces)."""
    parts = []
    for ch in text:
        if ch in _ASCII_PUNCTUATION:
            parts.append(re.escape("\\" + ch))
        elif ch in "\r\n":
            parts.append(r"[\s]")
        else:
            parts.append(re.escape(ch))
    return "".join(parts)


def shows_literally(body: str, text: str) -> bool:
    """Whether the Markdown ``body`` contains ``text`` as literal text (see ``markdown_literal``)."""
    return re.search(markdown_literal(text), body) is not None


def plotly_literal(value: str) -> bool:
    """Whether a Plotly string holds no tag: every '<' is written as an entity."""
    return "<" not in value and ">" not in value


def plotly_shows(value: str, text: str) -> bool:
    """Whether a Plotly string shows ``text`` (Plotly turns &lt; &gt; &amp; back into characters)."""
    return text in html.unescape(value) and plotly_literal(value)
