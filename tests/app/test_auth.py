"""Sign-in gate: the pure decision, and the gate itself under AppTest with a faked ``st.user``."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app.auth import decide, email_allowed
from app.config import ConfigError, parse_emails
from tests.markdown import as_text

AUTH = {
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "test-secret",
        "client_id": "id",
        "client_secret": "secret",
        "server_metadata_url": "https://accounts.example.org/.well-known/openid-configuration",
    }
}
ALLOWED = ("ada@example.org", "*@lab.example.org")

GATED = """
import streamlit as st
from app.auth import current_user, require_sign_in

user = require_sign_in()
st.markdown(f"INSIDE user={user} current={current_user()}")
"""


@pytest.mark.parametrize(
    ("configured", "allowed", "user", "verdict", "who"),
    [
        (False, (), {}, "open", None),
        (False, ALLOWED, {}, "misconfigured", None),  # an allow-list without [auth] fails closed
        (True, ALLOWED, {"is_logged_in": False}, "sign_in", None),
        (True, ALLOWED, {}, "sign_in", None),
        (True, ALLOWED, {"is_logged_in": True, "email": "Ada@Example.org"}, "granted", "ada@example.org"),
        (True, ALLOWED, {"is_logged_in": True, "email": "bo@lab.example.org"}, "granted", "bo@lab.example.org"),
        (True, ALLOWED, {"is_logged_in": True, "email": "eve@example.org"}, "denied", "eve@example.org"),
        (True, ALLOWED, {"is_logged_in": True, "email": "eve@evil-lab.example.org"}, "denied", "eve@evil-lab.example.org"),
        (True, ALLOWED, {"is_logged_in": True, "email": "ada@example.org", "email_verified": False}, "denied", "ada@example.org"),
        (True, ALLOWED, {"is_logged_in": True}, "denied", None),
        (True, (), {"is_logged_in": True, "email": "ada@example.org"}, "misconfigured", "ada@example.org"),
        (True, ("*",), {"is_logged_in": True, "email": "anyone@anywhere.org"}, "granted", "anyone@anywhere.org"),
    ],
)  # fmt: skip
def test_decide(configured, allowed, user, verdict, who):
    access = decide(configured, allowed, user)
    assert (access.verdict, access.user) == (verdict, who)
    assert access.allowed == (verdict in ("open", "granted"))
    if not access.allowed:
        assert access.message


def test_email_patterns_do_not_match_lookalikes():
    assert email_allowed("x@lab.example.org", ("*@lab.example.org",))
    assert not email_allowed("x@lab.example.org.evil.com", ("*@lab.example.org",))
    assert not email_allowed("x@sub.lab.example.org", ("*@lab.example.org",))
    assert not email_allowed("ada@example.org@evil.com", ("ada@example.org",))


def test_allow_list_parsing():
    assert parse_emails(" Ada@Example.org;*@lab.org , ") == ("ada@example.org", "*@lab.org")
    with pytest.raises(ConfigError, match="not e-mail addresses"):
        parse_emails("ada@example.org, bob")


def _run(monkeypatch, allowed: str | None, secrets: dict | None, user: dict) -> AppTest:
    if allowed is None:
        monkeypatch.delenv("FLIPSCOPE_ALLOWED_EMAILS", raising=False)
    else:
        monkeypatch.setenv("FLIPSCOPE_ALLOWED_EMAILS", allowed)
    at = AppTest.from_string(GATED)
    if secrets:
        at.secrets.update(secrets)
    at.user = user
    return at.run()


def _texts(at: AppTest) -> str:
    return " ".join(as_text(str(e.value)) for e in [*at.markdown, *at.info, *at.error, *at.caption])


def test_open_when_sign_in_is_not_configured(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml here
    at = _run(monkeypatch, None, None, {})
    assert not at.exception
    assert "INSIDE user=None current=None" in _texts(at)


def test_signed_out_user_sees_only_the_sign_in_screen(monkeypatch):
    at = _run(monkeypatch, "ada@example.org", AUTH, {"is_logged_in": False})
    assert not at.exception
    assert "INSIDE" not in _texts(at)
    assert [b.label for b in at.button] == ["Sign in"]


def test_permitted_user_gets_in_and_is_the_current_user(monkeypatch):
    at = _run(
        monkeypatch, "ada@example.org", AUTH, {"is_logged_in": True, "email": "Ada@example.org"}
    )
    assert not at.exception
    texts = _texts(at)
    assert "INSIDE user=ada@example.org current=ada@example.org" in texts
    assert "Signed in as ada@example.org" in texts
    assert [b.label for b in at.sidebar.button] == ["Sign out"]


def test_user_off_the_list_is_refused(monkeypatch):
    at = _run(
        monkeypatch, "ada@example.org", AUTH, {"is_logged_in": True, "email": "eve@example.org"}
    )
    assert not at.exception
    texts = _texts(at)
    assert "INSIDE" not in texts and "not on this instance's list" in texts


@pytest.mark.parametrize(
    ("allowed", "secrets"), [("ada@example.org", None), (None, AUTH), ("ada@, bob", AUTH)]
)
def test_half_configured_sign_in_fails_closed(monkeypatch, tmp_path, allowed, secrets):
    monkeypatch.chdir(tmp_path)
    at = _run(monkeypatch, allowed, secrets, {"is_logged_in": True, "email": "ada@example.org"})
    assert not at.exception
    texts = _texts(at)
    assert "INSIDE" not in texts and "FLIPSCOPE_ALLOWED_EMAILS" in texts


def _page_scripts() -> list[str]:
    from pathlib import Path

    app = Path(__file__).resolve().parents[2] / "app"
    return sorted(
        str(p.relative_to(app))
        for folder in ("pages", "views")
        for p in (app / folder).glob("*.py")
        if p.name != "__init__.py"
    )


def test_no_page_is_reachable_signed_out(monkeypatch):
    """The entrypoint gates every page. A folder named ``pages`` beside the entrypoint would let
    Streamlit run a page's script directly (its v1 fallback) until some run calls st.navigation."""
    from pathlib import Path

    assert not (Path(__file__).resolve().parents[2] / "app" / "pages").exists()
    monkeypatch.setenv("FLIPSCOPE_ALLOWED_EMAILS", "ada@example.org")
    at = AppTest.from_file("../../app/main.py", default_timeout=30)
    at.secrets.update(AUTH)
    at.user = {"is_logged_in": False}
    for page in [None, *_page_scripts()]:
        if page is not None:
            at.switch_page(page)
        at.run()
        assert not at.exception, page
        assert [t.value for t in at.title] == ["Flipscope"], page
        assert [b.label for b in at.button] == ["Sign in"], page
        assert not at.get("file_uploader") and not at.get("plotly_chart"), page
