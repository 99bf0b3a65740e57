"""Where state lives: files under the data folder, or PostgreSQL when a database URL is set.

The only place that picks. Everything else receives stores with the same methods
either way: conversations, files (and the key that signs their URLs), the usage
ledger with its budget reservations, and the rate limits' counters.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from .config import Settings
from .usage.ledger import UsageLedger


class Conversations(Protocol):
    """What the manager, the reply jobs and the followers use: ConversationStore (files,
    conversations/store.py) and PgConversationStore (database/conversations.py)."""

    stop_poll_s: float  # how often a running reply may cheaply look for a stop request
    transient_errors: tuple[type[BaseException], ...]  # a write's failures a later try may get through

    def locked(self, owner: str, conversation_id: str, timeout_s: float = ...,
               existing: bool = False) -> contextlib.AbstractContextManager: ...
    def exists(self, owner: str, conversation_id: str) -> bool: ...
    def read(self, owner: str, conversation_id: str) -> dict | None: ...
    def load(self, owner: str, conversation_id: str) -> tuple[dict, tuple] | None: ...
    def follow(self, owner: str, conversation_id: str, position: tuple) -> tuple[list | None, tuple | None]: ...
    def may_have_news(self, owner: str, conversation_id: str, position: tuple) -> bool: ...
    def listen_for_stops(self, on_stop: Callable[[str, str, str | None], None], wanted: Callable[[], bool]) -> None: ...
    def read_header(self, owner: str, conversation_id: str) -> dict | None: ...
    def conversation_ids(self, owner: str) -> list[str]: ...
    def list_headers(self, owner: str, limit: int, after: tuple[int, str] | None = None): ...
    def write(self, owner: str, conversation_id: str, document: dict) -> None: ...
    def append(self, owner: str, conversation_id: str, records: list[dict], *, message_count: int | None = None,
               sync: bool = True, on_written=None, reply_texts: dict[str, str] | None = None) -> dict: ...
    def needs_compaction(self, mark: dict) -> bool: ...
    def delete(self, owner: str, conversation_id: str) -> bool: ...
    def sweep_temp_files(self, older_than_s: float = ...) -> int: ...
    def is_writable(self) -> bool: ...


class StoredFiles(Protocol):
    """Stored files: FileStore (files.py) and PgFileStore (database/files.py); signed URLs are shared code."""

    def incoming_file(self): ...
    def adopt(self, owner: str, temp_path: Path, filename: str) -> dict: ...
    def save_bytes(self, owner: str, data: bytes, mime_type: str, filename: str) -> dict: ...
    def set_gemini_ref(self, owner: str, file_id: str, ref: dict | None) -> None: ...
    def get(self, owner: str, file_id: str) -> dict | None: ...
    def content(self, owner: str, file_id: str): ...  # a Path, or a seekable reader
    def read_bytes(self, owner: str, file_id: str) -> bytes: ...
    def owners(self) -> list[str]: ...
    def ids(self, owner: str) -> list[str]: ...
    def delete(self, owner: str, file_id: str) -> None: ...
    def attach(self, owner: str, file_id: str) -> dict | None: ...  # get(), and marks the file in use
    def last_used(self, owner: str, file_id: str) -> float | None: ...
    def remove_if_unused(self, owner: str, file_id: str, since: float) -> bool: ...
    def sweep_leftovers(self, older_than_s: float | None = None) -> None: ...
    def public(self, owner: str, meta: dict) -> dict: ...
    def signed_url(self, owner: str, file_id: str) -> str: ...
    def verify(self, file_id: str, owner: str, expires: str, signature: str) -> bool: ...


@dataclass
class Stores:
    conversations: Conversations
    files: StoredFiles
    ledger: UsageLedger
    rate_limits: object  # ratelimits.RateLimits, or its database form
    imports: object  # transfer.pending: the imports under way


def open_stores(settings: Settings) -> Stores:
    from .conversations.store import ConversationStore
    from .files import FileStore
    from .ratelimits import RateLimits
    from .transfer.pending import PendingImportFiles
    from .usage import SqliteLedger

    # Empty with a database: the replicas' shared one, which PgFileStore reads on first use.
    secret_key = settings.secret_key
    if settings.database_url:
        from .database import Database
        from .database.conversations import PgConversationStore
        from .database.files import PgFileStore
        from .database.ratelimits import PgRateLimits
        from .database.usage import PgLedger
        from .transfer.pending import PendingImportRows

        db = Database(settings.database_url)
        stores = Stores(PgConversationStore(db),
                        PgFileStore(db, settings.data_dir, secret_key, settings.file_url_ttl_s,
                                    settings.public_url, settings.upload_sweep_every_s),
                        PgLedger(db), PgRateLimits(settings.rate_limits, db, settings.rate_limit_storage),
                        PendingImportRows(db))
    else:
        conversations = ConversationStore(settings.data_dir)
        conversations.history_dir.mkdir(parents=True, exist_ok=True)
        stores = Stores(conversations,
                        FileStore(settings.data_dir, secret_key, settings.file_url_ttl_s, settings.public_url,
                                  settings.upload_sweep_every_s),
                        SqliteLedger(settings.data_dir / "usage.sqlite3"),
                        RateLimits(settings.rate_limits, settings.data_dir, settings.rate_limit_storage),
                        PendingImportFiles(settings.data_dir))
    stores.conversations.sweep_temp_files()
    stores.files.sweep_leftovers()
    return stores
