"""Timestamps and ids in the API's formats."""
from __future__ import annotations

import secrets
from datetime import datetime, timezone


def now_iso() -> str:
    """ISO 8601 in UTC with milliseconds: 2026-11-21T17:03:00.123Z."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id(prefix: str = "") -> str:
    # token_urlsafe uses [A-Za-z0-9_-], the id alphabet.
    return prefix + secrets.token_urlsafe(12)
