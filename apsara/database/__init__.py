"""PostgreSQL: the shared state several replicas serve from (APSARA_DATABASE_URL).

`Database` owns one connection pool per process (a pool made before a fork is
never used after it) and lends connections: `connection()` for one statement or
a few, `transaction()` for a block whose statements commit together. Inside a
`transaction()` every `connection()` of the same thread (greenlet under gevent)
gets that block's connection, so a store method called under a conversation's
lock writes in the lock's transaction.

psycopg 3's sync connections wait on their sockets through Python's `select`
when gevent has patched it, so a slow query parks only its own greenlet.
"""
from __future__ import annotations

import contextlib
import os
import threading

import psycopg
from psycopg_pool import ConnectionPool

from .migrations import migrate

POOL_SIZE = int(os.environ.get("APSARA_DATABASE_POOL_SIZE", "20"))
POOL_WAIT_S = 30.0
_pools: dict[tuple[str, int], ConnectionPool] = {}
_pools_lock = threading.Lock()


class Database:
    def __init__(self, url: str, pool_size: int = POOL_SIZE):
        self.url = url
        self.pool_size = pool_size
        self._local = threading.local()
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)

    @property
    def pool(self) -> ConnectionPool:
        key = (self.url, os.getpid())
        pool = _pools.get(key)
        if pool is None:
            with _pools_lock:
                pool = _pools.get(key)
                if pool is None:
                    pool = ConnectionPool(self.url, min_size=1, max_size=self.pool_size, timeout=POOL_WAIT_S,
                                          kwargs={"autocommit": True}, open=True, name="apsara")
                    _pools[key] = pool
        return pool

    @contextlib.contextmanager
    def connection(self):
        held = getattr(self._local, "conn", None)
        if held is not None:
            yield held
            return
        with self.pool.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def transaction(self):
        """A transaction that this thread's `connection()` calls join until it ends."""
        held = getattr(self._local, "conn", None)
        if held is not None:
            yield held  # already inside one: join it
            return
        with self.pool.connection() as conn, conn.transaction():
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

    def in_transaction(self) -> bool:
        """Whether this thread (greenlet) is inside `transaction()`: what it reads may yet be
        rolled back."""
        return getattr(self._local, "conn", None) is not None

    def ping(self) -> bool:
        try:
            with self.connection() as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False


def close_pools() -> None:
    """Close this process's pools (tests that drop their database)."""
    with _pools_lock:
        for key in [k for k in _pools if k[1] == os.getpid()]:
            _pools.pop(key).close()
