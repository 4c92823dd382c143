"""Markup payloads for the text-escaping tests, and the checks that they show as literal text.

Every payload points at 198.51.100.7 (TEST-NET-2, never routed) or ``*.invalid``, so a test that
fails because one was rendered fetches nothing real.
"""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd

from app.jobs import RunStore
from app.uploads import UploadStore
from datasets import Dataset

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

# The names of the hostile upload (hostile_upload) and its run (stored_run).
P = MARKDOWN_PAYLOADS
LABEL = P["link"]  # the label column's name
FEATURE = P["image"]  # a continuous feature's name
CATEGORICAL = P["html image"]  # a categorical feature's name ...
CATEGORIES = (P["autolink"], PLOTLY_PAYLOADS[0])  # ... and its values
CLASSES = (P["reference link"], PLOTLY_PAYLOADS[2])  # the label's values
FILE = FILE_NAME_PAYLOADS[0] + ".csv"

_ASCII_PUNCTUATION = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def markdown_literal(text: str) -> str:
    """The pattern of ``text`` written as literal Markdown: CommonMark shows a backslash-escaped
    ASCII punctuation character as itself and nothing else can start markup, so every such
    character of ``text`` must be escaped (line breaks may become spaces; invisible word joiners,
    U+2060, may stand between characters)."""
    parts = []
    for ch in text:
        if ch in _ASCII_PUNCTUATION:
            parts.append(re.escape("\\" + ch))
        elif ch in "\r\n":
            parts.append(r"[\s]")
        else:
            parts.append(re.escape(ch))
    return "\u2060?".join(parts)


def shows_literally(body: str, text: str) -> bool:
    """Whether the Markdown ``body`` contains ``text`` as literal text (see ``markdown_literal``)."""
    return re.search(markdown_literal(text), body) is not None


def plotly_literal(value: str) -> bool:
    """Whether a Plotly string holds no tag: every '<' is written as an entity."""
    return "<" not in value and ">" not in value


def plotly_shows(value: str, text: str) -> bool:
    """Whether a Plotly string shows ``text`` (Plotly turns &lt; &gt; &amp; back into characters)."""
    return text in html.unescape(value) and plotly_literal(value)


def hostile_upload(store: UploadStore) -> tuple[str, Dataset]:
    """A CSV upload whose file, label, feature, class and category names are payloads."""
    rng = np.random.default_rng(0)
    n = 80
    frame = pd.DataFrame(
        {
            FEATURE: rng.normal(size=n).round(3),
            "x2": rng.normal(size=n).round(3),
            CATEGORICAL: [CATEGORIES[i % 2] for i in range(n)],
            LABEL: [CLASSES[(i // 2) % 2] for i in range(n)],
        }
    )
    return store.add_dataset(frame.to_csv(index=False).encode(), FILE, LABEL)


def stored_run(store: RunStore, upload_id: str, dataset: Dataset) -> str:
    """An EMAP-like finished run over the upload: every row flips the categorical feature."""
    from tests.app.views.prepared import finished_run
    from tests.factories import counterfactual_explanation

    X = dataset.X_test[:12].copy()
    cf = X.copy()
    block = dataset.schema.categorical[0].block
    cf[:, block] = 1.0 - cf[:, block]
    cf[:, 0] += 0.5
    explanation = counterfactual_explanation(
        X, cf, dataset.y_test[:12], feature_names=dataset.feature_names,
        class_names=dataset.class_names, modality="tabular", schema=dataset.schema,
        diagnostics={"perturbation_norm": np.linalg.norm(cf - X, axis=1)},
        params={"pinned": [FEATURE]}, source=(dataset.name, "none"),
    )  # fmt: skip
    return finished_run(
        store, "emap", {"upload": upload_id}, explanation, params={"pinned": [FEATURE]}
    )
