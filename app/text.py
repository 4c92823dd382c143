"""Text that users control, made inert for the two renderers in the app that read markup.

Streamlit renders what ``st.markdown``, ``st.caption``, ``st.info/warning/error/success``,
``st.write`` of a string, titles, widget labels, radio options, metric labels and values, toasts
and progress texts receive as GitHub-flavoured Markdown (with its own extensions: ``:red[...]``,
``:material/...:``, ``$math$``). Plotly draws titles, axis, tick and legend labels and hover text
through a subset of HTML (``<a href>``, ``<b>``, ``<span style>``, ``<br>``). A file name, column,
class or category name, an id from the URL or an error message that quotes one, written into
either unescaped, becomes markup: a link on our domain, or an image that every viewer's browser
fetches from a stranger's server.

``md`` escapes for Markdown, ``plot_text`` for Plotly's HTML subset. Plain-text places (selectbox and
multiselect options, data frames, ``st.code``, ``st.text``) take the raw string: an escape there
would show.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

# Every ASCII punctuation character: CommonMark lets any of them be backslash-escaped, and one of
# them starts every construct (links, images, emphasis, code, HTML, <autolinks>, headings, lists,
# tables, entities, math, and Streamlit's :directives[...]).
_MD_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
# GFM's bare-URL and e-mail links are found in the text after escapes are resolved, so escapes do
# not stop them; an invisible word joiner (U+2060) inside "://", "www." and after "@" does.
_AUTOLINK_LITERAL = re.compile(r"(?<=http:)(?=//)|(?<=https:)(?=//)|(?<=www)(?=\.)|(?<=@)", re.I)
WORD_JOINER = "\u2060"


def md(value: object) -> str:
    """``value`` as literal text inside Markdown: each ASCII punctuation character is
    backslash-escaped, line breaks become spaces (a new line could start a block, such as a
    heading or a table), and bare URLs and e-mail addresses get a word joiner that keeps them
    from becoming links."""
    text = _AUTOLINK_LITERAL.sub(WORD_JOINER, _LINE_BREAKS.sub(" ", str(value)))
    return _MD_PUNCTUATION.sub(r"\\\1", text)


def plot_text(value: object) -> str:
    """``value`` as literal text in a Plotly title, label, legend or hover text: ``&``, ``<`` and
    ``>`` become entities, which Plotly turns back into the characters without reading a tag."""
    return html.escape(str(value), quote=False)


def plot_texts(values: Iterable[object]) -> list[str]:
    """``plot_text`` of each value (class or feature names used as categories or trace names)."""
    return [plot_text(v) for v in values]
