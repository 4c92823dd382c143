"""Reading the Markdown source AppTest gives as the text a browser shows, for the escapes only.

User text is written into Markdown with every ASCII punctuation character backslash-escaped
(``app.text.md``); CommonMark shows such a pair as the character alone, and the invisible word
joiners that keep bare URLs from becoming links show as nothing. Tests that look for a name in an
element's body compare against ``as_text(body)``.
"""

from __future__ import annotations

import re

_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")


def as_text(body: str) -> str:
    """``body`` with CommonMark's backslash escapes resolved and word joiners (U+2060) removed
    (other Markdown is left as it is)."""
    return _ESCAPED.sub(r"\1", body).replace("\u2060", "")
