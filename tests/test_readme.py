"""The README documents every variable the server reads."""
from __future__ import annotations

import re

from tests.servers import ROOT


def _read_variables() -> set[str]:
    names: set[str] = set()
    for source in ("gunicorn.conf.py", "apsara/config.py"):
        text = (ROOT / source).read_text()
        names |= set(re.findall(r"""(?:_env|env\.get|_number\(env,)\(?\s*["']([A-Za-z_][A-Za-z0-9_]*)["']""", text))
        names |= set(re.findall(r"""env\[["']([A-Za-z_][A-Za-z0-9_]*)["']\]""", text))
    return names


def test_every_variable_read_is_documented():
    read = _read_variables()
    assert {"GUNICORN_BIND", "GUNICORN_WORKER_CONNECTIONS", "LOG_LEVEL", "APSARA_DATA_DIR",
            "APSARA_PUBLIC_URL"} <= read  # the scan itself works
    readme = (ROOT / "README.md").read_text()
    internal = {"APSARA_OFFLINE_FAKE"}  # set by make run for its own server
    missing = sorted(name for name in read - internal if f"`{name}`" not in readme)
    assert missing == [], f"read but not documented in the README: {missing}"
