"""Optional sign-in: OpenID Connect through ``st.login``, limited to an allow-list of e-mail addresses.

Sign-in is on when ``.streamlit/secrets.toml`` has an ``[auth]`` section (Streamlit's own keys:
``redirect_uri``, ``cookie_secret``, ``client_id``, ``client_secret``, ``server_metadata_url``).
Who may enter is ``FLIPSCOPE_ALLOWED_EMAILS``: addresses, ``*@example.org`` for a whole domain, or
``*`` for any account the provider signs in. It fails closed: an allow-list without ``[auth]``, or
``[auth]`` without an allow-list, lets nobody in and says what to configure.

The entrypoint calls ``require_sign_in()`` before anything else renders; it returns only for a
permitted user and otherwise shows a sign-in (or refusal) screen and stops the run, so no page,
run or artifact is reachable. ``current_user()`` names the signed-in user for run ownership.
The decision itself is the pure function ``decide``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import streamlit as st
from streamlit.errors import StreamlitSecretNotFoundError

from app import text
from app.config import ConfigError, settings

Verdict = Literal["open", "granted", "sign_in", "denied", "misconfigured"]


@dataclass(frozen=True)
class Access:
    """What the gate decided: ``allowed`` is True only for ``open`` and ``granted``."""

    verdict: Verdict
    user: str | None = None
    message: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict in ("open", "granted")


def email_allowed(email: str, allowed: tuple[str, ...]) -> bool:
    """Exact address (case-insensitive), ``*@domain`` for a whole domain, or ``*`` for anyone."""
    email = email.strip().lower()
    if email.count("@") != 1:
        return False
    domain = email.split("@")[1]
    return any(a == "*" or a == email or (a.startswith("*@") and a[2:] == domain) for a in allowed)


def decide(auth_configured: bool, allowed: tuple[str, ...], user: Mapping[str, Any]) -> Access:
    """Decide access from the configuration and ``st.user``'s claims (a plain mapping).

    Parameters
    ----------
    auth_configured : whether secrets.toml has an ``[auth]`` section.
    allowed : lower-cased allow-list entries (``app.config.parse_emails``).
    user : the identity claims; ``is_logged_in``, ``email`` and ``email_verified`` are read.
    """
    if not auth_configured:
        if allowed:
            return Access(
                "misconfigured",
                message="FLIPSCOPE_ALLOWED_EMAILS is set but sign-in is not configured: add an [auth] "
                "section to .streamlit/secrets.toml (redirect_uri, cookie_secret, client_id, "
                "client_secret, server_metadata_url), or unset FLIPSCOPE_ALLOWED_EMAILS to run "
                "without sign-in.",
            )
        return Access("open")
    if not user.get("is_logged_in"):
        return Access("sign_in", message="Sign in to use Flipscope.")
    email = str(user.get("email") or "").strip().lower()
    if not email:
        return Access(
            "denied",
            message="Your identity provider sent no e-mail address, so the allow-list cannot be "
            "checked. The operator should request the 'email' scope (Streamlit's default is "
            "'openid profile email').",
        )
    if user.get("email_verified") is False:
        return Access(
            "denied",
            email,
            f"The address {email} is not verified with your identity provider; verify it there "
            "and sign in again.",
        )
    if not allowed:
        return Access(
            "misconfigured",
            email,
            "Sign-in is configured but FLIPSCOPE_ALLOWED_EMAILS is empty, so nobody is let in. "
            "The operator should list the permitted addresses (or *@domain, or * for any account).",
        )
    if not email_allowed(email, allowed):
        return Access(
            "denied",
            email,
            f"{email} is not on this instance's list of permitted users. Ask the operator to add "
            "it, or sign out and use another account.",
        )
    return Access("granted", email)


def auth_configured() -> bool:
    """Whether secrets.toml (or AppTest's secrets) has an ``[auth]`` section."""
    try:
        return "auth" in st.secrets
    except (FileNotFoundError, StreamlitSecretNotFoundError):
        return False


def _access() -> Access:
    try:
        allowed = settings().allowed_emails
    except ConfigError as exc:
        return Access("misconfigured", message=str(exc))
    return decide(auth_configured(), allowed, st.user.to_dict())


def current_user() -> str | None:
    """The signed-in, permitted user's e-mail address (lower case); None when sign-in is off."""
    access = _access()
    return access.user if access.verdict == "granted" else None


def require_sign_in() -> str | None:
    """Gate the whole app: return the user (None when sign-in is off) or render the sign-in screen
    and stop the run. Call it in the entrypoint before the sidebar and ``st.navigation``."""
    access = _access()
    if access.allowed:
        if access.verdict == "granted":
            with st.sidebar:
                st.caption(f"Signed in as {text.md(access.user)}")
                if st.button("Sign out", key="auth_sign_out", icon=":material/logout:"):
                    st.logout()
        return access.user
    st.title("Flipscope")
    if access.verdict == "sign_in":
        st.info(text.md(access.message), icon=":material/lock:")
        if st.button("Sign in", type="primary", key="auth_sign_in", icon=":material/login:"):
            st.login()
    else:
        st.error(text.md(access.message), icon=":material/block:")
        if access.user and st.button("Sign out", key="auth_sign_out"):
            st.logout()
    st.stop()
    return None  # unreachable: st.stop() raises; kept for type checkers
