"""The dashboard's web server: Streamlit's own app (``app/main.py``) behind one ASGI middleware.

``flipscope run`` (and so ``make run`` and the Docker image) starts ``streamlit run
app/server.py``; Streamlit finds the ``st.App`` below and serves it with its usual server and
options (port, address, upload size, XSRF). Streamlit has no setting for what the middleware adds:

* every HTTP response says that only our own pages may frame it (``X-Frame-Options: SAMEORIGIN``
  and ``Content-Security-Policy: frame-ancestors 'self'``), so another site cannot put the
  dashboard in an invisible frame and steer a signed-in user's clicks;
* ``/_stcore/metrics`` answers 404: it tells anyone who asks how many sessions are open and how
  much memory the caches hold. ``/_stcore/health`` stays (the Docker health check uses it).

This module imports nothing from the app: Streamlit imports it as the top-level module
``server`` from ``app/``.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
from starlette.middleware import Middleware

FRAME_HEADERS = (
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"content-security-policy", b"frame-ancestors 'self'"),
)
CLOSED_PATHS = ("/_stcore/metrics",)  # also under a server.baseUrlPath prefix


class HardenedResponses:
    """ASGI middleware: the frame headers on every HTTP response, 404 for ``CLOSED_PATHS``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # the websocket and lifespan pass untouched
            await self.app(scope, receive, send)
            return
        if scope["path"].rstrip("/").endswith(CLOSED_PATHS):
            await _not_found(send)
            return
        replaced = {name for name, _ in FRAME_HEADERS}

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() not in replaced]
                message = {**message, "headers": [*headers, *FRAME_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _not_found(send: Any) -> None:
    body = b"Not Found"
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *FRAME_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


app = st.App("main.py", middleware=[Middleware(HardenedResponses)])
