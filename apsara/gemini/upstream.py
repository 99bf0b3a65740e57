"""Closing a reply's Gemini request from outside the thread that reads it.

Stopping a reply must stop Gemini generating (and billing), so the HTTP
connection itself is shut. The SDK gives no handle on a streaming request, so
the client's transport notes each response it opens for the reply being run
(a context variable set around the call, one per thread or greenlet), and
`Upstream.close()` shuts those sockets down: the reading thread wakes at once
with an error, and Gemini sees the connection go.
"""
from __future__ import annotations

import contextlib
import contextvars
import socket
import threading

import httpx2

_current: contextvars.ContextVar["Upstream | None"] = contextvars.ContextVar("apsara_upstream", default=None)


class Upstream:
    """The HTTP responses one reply has open at Gemini."""

    def __init__(self):
        self._lock = threading.Lock()
        self._responses: list = []
        self.closed = False

    def attach(self, response) -> None:
        with self._lock:
            self._responses.append(response)
            closed = self.closed
        if closed:
            _shut(response)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            responses, self._responses = self._responses, []
        for response in responses:
            _shut(response)


def _shut(response) -> None:
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def watched(upstream: Upstream):
    """Responses opened inside this block belong to `upstream`."""
    token = _current.set(upstream)
    try:
        yield upstream
    finally:
        _current.reset(token)


class StoppableTransport(httpx2.HTTPTransport):
    def handle_request(self, request):
        upstream = _current.get()
        if upstream is not None and upstream.closed:
            raise httpx2.ReadError("the reply was stopped", request=request)
        response = super().handle_request(request)
        if upstream is not None:
            upstream.attach(response)
        return response
