"""Values every replica must agree on without being told: made once, then read."""
from __future__ import annotations

import secrets

from . import Database


def shared_value(db: Database, name: str, make) -> str:
    """The value stored under `name`; the first replica to ask stores `make()`."""
    with db.connection() as conn:
        conn.execute("INSERT INTO shared_settings (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                     (name, make()))
        return conn.execute("SELECT value FROM shared_settings WHERE name = %s", (name,)).fetchone()[0]


def file_url_key(db: Database) -> str:
    return shared_value(db, "file_url_key", lambda: secrets.token_hex(32))
