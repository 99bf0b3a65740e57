"""Timestamps and ids in the API's formats."""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone


def now_iso(ago: timedelta = timedelta(0)) -> str:
    """ISO 8601 in UTC with milliseconds (2026-11-21T17:03:00.123Z), now or `ago` before now."""
    return (datetime.now(timezone.utc) - ago).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def an_hour_ago() -> str:
    """A time safely in the past, for data made to look older."""
    return now_iso(timedelta(hours=1))


def new_id(prefix: str = "") -> str:
    # token_urlsafe uses [A-Za-z0-9_-], the id alphabet.
    return prefix + secrets.token_urlsafe(12)
