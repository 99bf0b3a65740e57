"""Small readers shared by the importers: other apps' files are untrusted, so
every value is checked for its type before it is used."""
from __future__ import annotations

import math
from datetime import datetime, timezone

from ..clock import now_iso


def as_text(value) -> str:
    return value if isinstance(value, str) else ""


def iso_from_epoch(value) -> str:
    """Unix seconds as the API's timestamp; now when the source has none or a nonsense one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return now_iso()
    try:
        stamp = datetime.fromtimestamp(value, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return now_iso()
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
