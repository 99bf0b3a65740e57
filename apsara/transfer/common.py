"""Small readers shared by the importers: other apps' files are untrusted, so
every value is checked for its type before it is used, and every time for its range."""
from __future__ import annotations

import re
from datetime import datetime, timezone

from ..clock import now_iso

# The times an import may hold. Stored times become nanoseconds since 1970 in 64-bit
# integers (file times, the search index, the listing order, PostgreSQL's bigint), which run
# out on 2262-04-11; a conversation's times only grow from its newest message's. 2200 is
# beyond any real chat's clock, even a badly set one, and leaves decades before that end.
# Nothing a chat app exported was written before 1970.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc)  # the first time refused
OUT_OF_RANGE = f"a time before {EARLIEST:%Y-%m-%d} or from {LATEST:%Y-%m-%d} on (UTC): no time this server can keep"
NOT_A_TIME = "not a time in ISO 8601 with its offset, such as 2026-11-21T17:03:00.123Z"
# Date and time, seconds, optional fraction, and an explicit offset: week dates, dates
# without a time or times without an offset say too little (or too loosely) to store.
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")


class RefusedValue(ValueError):
    """A value of an import that cannot be stored: where it is (a dotted path) and why."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message

    def under(self, prefix: str) -> "RefusedValue":
        """The same refusal, seen from the object that holds this one."""
        return RefusedValue(f"{prefix}.{self.path}", self.message)


def as_text(value) -> str:
    return value if isinstance(value, str) else ""


def iso(stamp: datetime) -> str:
    """The API's timestamp: UTC with milliseconds (2026-11-21T17:03:00.123Z)."""
    return stamp.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_seconds(value, path: str) -> float | None:
    """Unix seconds, or None when the source gives none (other apps leave times out or null:
    the caller picks one). A number outside the range is refused, not guessed at: a ChatGPT
    `update_time` of 10,000,000,000 is a broken file, not a conversation of the year 2286."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    # Compared, never converted first: float(10**400) raises, and NaN fails every comparison.
    if not EARLIEST.timestamp() <= value < LATEST.timestamp():
        raise RefusedValue(path, OUT_OF_RANGE)
    return float(value)


def iso_from_epoch(value, path: str) -> str:
    """Unix seconds as the API's timestamp; now when the source has none."""
    seconds = epoch_seconds(value, path)
    return now_iso() if seconds is None else iso(datetime.fromtimestamp(seconds, timezone.utc))


def iso_from_text(value: str) -> str:
    """An ISO 8601 time with its offset, as the API's timestamp (UTC, milliseconds), so stored
    times compare as text in time order. ValueError, with what is wrong, for anything else."""
    if not _ISO_TIME.fullmatch(value):
        raise ValueError(NOT_A_TIME)
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)
    except (ValueError, OverflowError):  # month 13, or year 1 moved back past year 1 by its offset
        raise ValueError(NOT_A_TIME) from None
    if not EARLIEST <= stamp < LATEST:
        raise ValueError(OUT_OF_RANGE)
    return iso(stamp)
