"""Where state lives: files under the data folder, or PostgreSQL when a database URL is set.

The only place that picks. Everything else receives a conversation store and a
file store with the same methods either way.
"""
from __future__ import annotations

from .config import Settings


def open_stores(settings: Settings):
    """(conversation store, file store) for these settings."""
    from .conversations.store import ConversationStore
    from .files import FileStore

    secret_key = settings.secret_key  # empty with a database: the replicas' shared one
    if settings.database_url:
        from .database import Database
        from .database.conversations import PgConversationStore
        from .database.files import PgFileStore
        from .database.shared import file_url_key

        db = Database(settings.database_url)
        store = PgConversationStore(db)
        files = PgFileStore(db, settings.data_dir, secret_key or file_url_key(db), settings.file_url_ttl_s)
    else:
        store = ConversationStore(settings.data_dir)
        store.history_dir.mkdir(parents=True, exist_ok=True)
        files = FileStore(settings.data_dir, secret_key, settings.file_url_ttl_s)
    store.sweep_temp_files()
    files.sweep_incoming()
    return store, files
