"""Limits from the environment, their safe defaults, and the hosting files that must agree with them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from app.config import MIB, ConfigError, Settings, settings, upload_limits
from datasets.upload import UploadLimits, read_table

ROOT = Path(__file__).resolve().parents[2]
LIMIT_VARS = (
    "FLIPSCOPE_MAX_UPLOAD_MB",
    "FLIPSCOPE_MAX_ROWS",
    "FLIPSCOPE_MAX_COLUMNS",
    "FLIPSCOPE_MAX_JOBS_PER_USER",
    "FLIPSCOPE_MAX_JOBS_TOTAL",
    "FLIPSCOPE_JOB_TIME_LIMIT_S",
    "FLIPSCOPE_JOB_MEMORY_MB",
    "FLIPSCOPE_ALLOWED_EMAILS",
)


@pytest.fixture
def clean_env(monkeypatch):
    for var in LIMIT_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_defaults_are_the_documented_safe_values(clean_env):
    cfg = settings()
    assert (cfg.max_upload_mb, cfg.max_rows, cfg.max_columns) == (50, 200_000, 1_000)
    assert (cfg.max_jobs_per_user, cfg.job_time_limit_s, cfg.allowed_emails) == (4, 1_800, ())
    assert (cfg.max_jobs_total, cfg.job_memory_mb) == (16, 8_192)
    limits = upload_limits(cfg)
    defaults = UploadLimits()
    assert limits.max_bytes == defaults.max_bytes == 50 * MIB
    assert (limits.max_rows, limits.max_columns) == (defaults.max_rows, defaults.max_columns)
    assert limits.max_cells == defaults.max_cells


def test_environment_overrides_reach_the_upload_limits(clean_env):
    clean_env.setenv("FLIPSCOPE_MAX_UPLOAD_MB", "5")
    clean_env.setenv("FLIPSCOPE_MAX_ROWS", "1_000")
    clean_env.setenv("FLIPSCOPE_MAX_COLUMNS", "3")
    clean_env.setenv("FLIPSCOPE_MAX_JOBS_PER_USER", "2")
    clean_env.setenv("FLIPSCOPE_JOB_TIME_LIMIT_S", "60")
    clean_env.setenv("FLIPSCOPE_JOB_MEMORY_MB", "2_048")
    clean_env.setenv("FLIPSCOPE_MAX_JOBS_TOTAL", "40")
    cfg = settings()
    assert (cfg.max_jobs_per_user, cfg.job_time_limit_s, cfg.job_memory_mb) == (2, 60, 2_048)
    assert cfg.max_jobs_total == 40
    limits = upload_limits()
    assert (limits.max_bytes, limits.max_rows, limits.max_columns) == (5 * MIB, 1_000, 3)
    with pytest.raises(ValueError, match="header of 4 columns; the limit is 3"):
        read_table(b"a,b,c,d\n1,2,3,4\n", "t.csv", limits)


def test_the_apps_upload_store_uses_the_configured_limits(clean_env, data_dir):
    from app.uploads import upload_store  # the one factory: pages, jobs and the reaper use it

    clean_env.setenv("FLIPSCOPE_MAX_ROWS", "25")
    store = upload_store()
    assert store.limits.max_rows == 25 and store.root == data_dir / "uploads"


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("FLIPSCOPE_MAX_UPLOAD_MB", "lots", "not a whole number"),
        ("FLIPSCOPE_MAX_UPLOAD_MB", "0", "outside 1..1,048,576"),
        ("FLIPSCOPE_MAX_ROWS", "-5", "outside"),
        ("FLIPSCOPE_JOB_TIME_LIMIT_S", "1.5", "not a whole number"),
        ("FLIPSCOPE_JOB_MEMORY_MB", "100", "outside 256..1,048,576"),
        ("FLIPSCOPE_JOB_MEMORY_MB", "8G", "not a whole number"),
        ("FLIPSCOPE_MAX_JOBS_TOTAL", "0", "outside 1..100,000"),
        ("FLIPSCOPE_ALLOWED_EMAILS", "ada@example.org, admin", "not e-mail addresses"),
    ],
)
def test_a_malformed_variable_is_named(clean_env, var, value, fragment):
    clean_env.setenv(var, value)
    with pytest.raises(ConfigError, match=fragment) as info:
        settings()
    assert var in str(info.value)


def test_streamlit_config_is_hardened_and_agrees_with_the_upload_limit():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server, client = config["server"], config["client"]
    default_mb = Settings.__dataclass_fields__["max_upload_mb"].default
    assert server["maxUploadSize"] == default_mb == UploadLimits().max_bytes // MIB
    assert server["enableXsrfProtection"] is True and server["enableCORS"] is True
    assert client["showErrorDetails"] == "none"
    assert server["enableStaticServing"] is False and server["runOnSave"] is False
    assert config["runner"]["postScriptGC"] is False, "a full GC after every run costs 0.2 s"


def test_dockerfile_runs_the_app_with_a_health_check():
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "\nFROM python:3.11-slim\n" in text
    assert "chromium" in text and "pip install -c /tmp/constraints.txt ." in text
    assert "/_stcore/health" in text.split("HEALTHCHECK", 1)[1]
    assert text.rstrip().endswith('CMD ["flipscope", "run", "--address", "0.0.0.0"]')
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".streamlit/secrets.toml" in ignored and ".venv" in ignored
