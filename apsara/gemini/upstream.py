"""Closing a reply's Gemini request from outside the thread that reads it.

Stopping a reply must stop Gemini generating (and billing), so the HTTP
connection itself is shut, whether Gemini is still thinking (no response
headers yet) or already streaming. The SDK gives no handle on its requests, so
the client's connections are made through a network backend whose streams note,
for each read or write, the reply being run (a context variable set around the
call, one per thread or greenlet). `Upstream.close()` shuts the sockets its
reply is waiting on: the reading thread wakes at once with an error, and Gemini
sees the connection go. A connection is only ever shut while its own reply
uses it: kept alive in the pool, it may serve another reply next.
"""
from __future__ import annotations

import contextlib
import contextvars
import socket
import threading

import httpcore2
import httpx2

_current: contextvars.ContextVar["Upstream | None"] = contextvars.ContextVar("apsara_upstream", default=None)


class Upstream:
    """The connections one reply is reading from or writing to at Gemini."""

    def __init__(self):
        self._lock = threading.Lock()
        self._busy: set = set()
        self.closed = False

    @contextlib.contextmanager
    def using(self, stream: "_StoppableStream"):
        with self._lock:
            if self.closed:  # stopped between two reads: the next one does not start
                raise httpcore2.ReadError("the reply was stopped")
            self._busy.add(stream)
        try:
            yield
        finally:
            with self._lock:
                self._busy.discard(stream)

    def close(self) -> None:
        # Shut under the lock: a stream leaves `_busy` (and may go back to the pool, for another
        # reply) only through it. shutdown() does not block.
        with self._lock:
            self.closed = True
            for stream in self._busy:
                stream.shut()


@contextlib.contextmanager
def watched(upstream: Upstream):
    """Connections used inside this block are used for `upstream`."""
    token = _current.set(upstream)
    try:
        yield upstream
    finally:
        _current.reset(token)


def _for_current_reply(stream: "_StoppableStream"):
    upstream = _current.get()
    return upstream.using(stream) if upstream is not None else contextlib.nullcontext()


class _StoppableStream(httpcore2.NetworkStream):
    def __init__(self, inner: httpcore2.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _for_current_reply(self):
            return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _for_current_reply(self):
            self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> "_StoppableStream":
        return _StoppableStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)

    def shut(self) -> None:
        sock = self._inner.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _StoppableBackend(httpcore2.NetworkBackend):
    def __init__(self, inner: httpcore2.NetworkBackend):
        self._inner = inner

    def connect_tcp(self, *args, **kwargs) -> _StoppableStream:
        return _StoppableStream(self._inner.connect_tcp(*args, **kwargs))

    def connect_unix_socket(self, *args, **kwargs) -> _StoppableStream:
        return _StoppableStream(self._inner.connect_unix_socket(*args, **kwargs))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def stoppable_transport(**options) -> httpx2.HTTPTransport:
    """httpx's transport, its connections made through the backend above. httpx takes no
    backend, so its pool's is wrapped before the pool makes any connection."""
    transport = httpx2.HTTPTransport(**options)
    pool = transport._pool
    pool._network_backend = _StoppableBackend(pool._network_backend)
    return transport
