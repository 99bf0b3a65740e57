"""Where state lives: files under the data folder, or PostgreSQL when a database URL is set.

The only place that picks. Everything else receives stores with the same methods
either way: conversations, files (and the key that signs their URLs), the usage
ledger with its budget reservations, and the rate limits' counters.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import Settings


@dataclass
class Stores:
    conversations: object
    files: object
    ledger: object
    rate_limits: object


def open_stores(settings: Settings) -> Stores:
    from .conversations.store import ConversationStore
    from .files import FileStore
    from .ratelimits import RateLimits
    from .usage import SqliteLedger

    secret_key = settings.secret_key  # empty with a database: the replicas' shared one
    if settings.database_url:
        from .database import Database
        from .database.conversations import PgConversationStore
        from .database.files import PgFileStore
        from .database.ratelimits import PgRateLimits
        from .database.shared import file_url_key
        from .database.usage import PgLedger

        db = Database(settings.database_url)
        stores = Stores(PgConversationStore(db),
                        PgFileStore(db, settings.data_dir, secret_key or file_url_key(db), settings.file_url_ttl_s,
                                    settings.public_url, settings.upload_sweep_every_s),
                        PgLedger(db), PgRateLimits(settings.rate_limits, db, settings.rate_limit_storage))
    else:
        conversations = ConversationStore(settings.data_dir)
        conversations.history_dir.mkdir(parents=True, exist_ok=True)
        stores = Stores(conversations,
                        FileStore(settings.data_dir, secret_key, settings.file_url_ttl_s, settings.public_url,
                                  settings.upload_sweep_every_s),
                        SqliteLedger(settings.data_dir / "usage.sqlite3"),
                        RateLimits(settings.rate_limits, settings.data_dir, settings.rate_limit_storage))
    stores.conversations.sweep_temp_files()
    stores.files.sweep_incoming()
    return stores
