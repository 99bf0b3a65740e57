"""PostgreSQL: the shared state several replicas serve from (APSARA_DATABASE_URL).

`Database` owns one connection pool per process (a pool made before a fork is
never used after it) and lends connections: `connection()` for one statement or
a few, `transaction()` for a block whose statements commit together. Inside a
`transaction()` every `connection()` of the same thread (greenlet under gevent)
gets that block's connection, so a store method called under a conversation's
lock writes in the lock's transaction.

Nothing here touches the database until a request needs it: a worker that
starts while the database is away still boots, answers 503 for what needs the
database, and serves again by itself once it is back. The schema's migrations
run on the first connection that succeeds, once per process.

psycopg 3's sync connections wait on their sockets through Python's `select`
when gevent has patched it, so a slow query parks only its own greenlet.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from .migrations import migrate

POOL_SIZE = int(os.environ.get("APSARA_DATABASE_POOL_SIZE", "20"))
POOL_WAIT_S = 30.0  # how long a request may queue for a connection while the database answers
CONNECT_TIMEOUT_S = 5  # a connection attempt to a database that does not answer gives up after this
# While the last connection attempt failed, a request waits this long for one, not POOL_WAIT_S:
# the database is away, and a quick 503 beats a client hanging for half a minute.
UNREACHABLE_WAIT_S = 1.0
_pools: dict[tuple[str, int], ConnectionPool] = {}
_pools_lock = threading.Lock()
# conninfo -> whether the last attempt to connect to it failed (written by the pools' own threads)
_unreachable: dict[str, bool] = {}


class _Connection(psycopg.Connection):
    """A pooled connection that notes whether connecting worked, so a request need not wait
    POOL_WAIT_S for a pool that cannot grow."""

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs):
        try:
            conn = super().connect(conninfo, **kwargs)
        except psycopg.OperationalError:
            _unreachable[conninfo] = True
            raise
        _unreachable[conninfo] = False
        return conn


class Database:
    def __init__(self, url: str, pool_size: int = POOL_SIZE):
        self.url = url
        self.pool_size = pool_size
        self._local = threading.local()
        self._migrated = False
        self._tries = 0  # to migrate in this process: a request that waited on another's try sees it failed
        self._migrate_lock = threading.Lock()

    @property
    def pool(self) -> ConnectionPool:
        key = (self.url, os.getpid())
        pool = _pools.get(key)
        if pool is None:
            with _pools_lock:
                pool = _pools.get(key)
                if pool is None:
                    # check: a connection the database closed while it sat in the pool (a restart,
                    # an idle timeout) is dropped on checkout instead of failing the request.
                    pool = ConnectionPool(self.url, min_size=1, max_size=self.pool_size, timeout=POOL_WAIT_S,
                                          connection_class=_Connection, check=ConnectionPool.check_connection,
                                          kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
                                          open=True, name="apsara")
                    if not _pools:
                        # Closed while the interpreter still runs: left to the garbage collector at
                        # exit, the pool's threads cannot be joined under gevent and it logs a trace.
                        atexit.register(close_pools)
                    _pools[key] = pool
        return pool

    def reachable(self) -> bool:
        """False while this process's last attempt to connect failed."""
        return not _unreachable.get(self.url, False)

    def _ensure_schema(self) -> None:
        """Apply the migrations on first use (under their advisory lock, as every replica does)."""
        if self._migrated:
            return
        tries = self._tries
        with self._migrate_lock:
            if self._migrated:
                return
            if self._tries != tries:
                # One failed while this request waited: answer now rather than queue behind
                # another attempt that may wait connect_timeout for a database that does not answer.
                raise psycopg.OperationalError("the database could not be reached a moment ago")
            self._tries += 1
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                    migrate(conn)
            except psycopg.OperationalError:
                _unreachable[self.url] = True
                raise
            _unreachable[self.url] = False
            self._migrated = True

    def _checkout(self):
        """A pooled connection (context manager). While the database answers, a request queues up
        to POOL_WAIT_S for one; once connecting fails, it gives up within UNREACHABLE_WAIT_S."""
        self._ensure_schema()
        pool = self.pool
        deadline = time.monotonic() + POOL_WAIT_S
        while True:
            wait = min(deadline - time.monotonic(), UNREACHABLE_WAIT_S)
            try:
                conn = pool.getconn(timeout=max(wait, 0.01))
                break
            except PoolTimeout:
                if not self.reachable() or time.monotonic() >= deadline:
                    raise
        return _lent(pool, conn)

    @contextlib.contextmanager
    def connection(self):
        held = getattr(self._local, "conn", None)
        if held is not None:
            yield held
            return
        with self._checkout() as conn:
            yield conn

    @contextlib.contextmanager
    def transaction(self):
        """A transaction that this thread's `connection()` calls join until it ends."""
        held = getattr(self._local, "conn", None)
        if held is not None:
            yield held  # already inside one: join it
            return
        with self._checkout() as conn, conn.transaction():
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


@contextlib.contextmanager
def _lent(pool: ConnectionPool, conn):
    """Give `conn` back to `pool` afterwards (the pool checks and drops a broken one)."""
    try:
        yield conn
    finally:
        pool.putconn(conn)


def close_pools() -> None:
    """Close this process's pools (tests that drop their database)."""
    with _pools_lock:
        for key in [k for k in _pools if k[1] == os.getpid()]:
            _pools.pop(key).close()
