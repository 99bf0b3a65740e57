"""Server-sent events for replies.

A reply runs as a job in its own thread; a stream only relays its events, so a
client that goes away stops the relay, never the reply. While nothing else goes
out, a `: ping` comment is sent every `ping_interval_s`, which keeps proxies from
cutting a stream while a model thinks in silence.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import orjson
from flask import Response

PING = b": ping\n\n"


def format_event(event_id: int, name: str, data) -> bytes:
    return b"event: %s\nid: %d\ndata: %s\n\n" % (name.encode(), event_id, orjson.dumps(data))


def relay(events: Iterable) -> Iterator[bytes]:
    """(id, name, data) events, or None for "still nothing": a ping."""
    for event in events:
        yield PING if event is None else format_event(*event)


def sse_response(events: Iterable) -> Response:
    response = Response(relay(events), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response
