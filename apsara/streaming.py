"""Server-sent events for replies.

The turn runs in its own thread and hands events to the response through a
queue. So the reply is finished and stored even if the client goes away (a
closed connection stops the relay, not the turn), and the relay can send a
`: ping` comment whenever nothing else has gone out for `ping_interval_s`,
which keeps proxies from cutting a stream while a model thinks in silence.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Iterable, Iterator

import orjson
from flask import Response

log = logging.getLogger("apsara.streaming")
_END = object()


def format_event(event_id: int, name: str, data) -> bytes:
    return b"event: %s\nid: %d\ndata: %s\n\n" % (name.encode(), event_id, orjson.dumps(data))


def run_in_background(events: Iterable[tuple[str, dict]]) -> "queue.Queue":
    """Drain `events` in a daemon thread into a queue that ends with _END."""
    channel: queue.Queue = queue.Queue()

    def produce():
        try:
            for event in events:
                channel.put(event)
        except Exception:  # the turn stores its own failures; this is a last resort
            log.exception("reply stream failed")
        finally:
            channel.put(_END)

    threading.Thread(target=produce, name="apsara-reply", daemon=True).start()
    return channel


def relay(channel: "queue.Queue", first: Iterable[tuple[str, dict]], ping_interval_s: float) -> Iterator[bytes]:
    event_id = 0
    for name, data in first:
        event_id += 1
        yield format_event(event_id, name, data)
    while True:
        try:
            item = channel.get(timeout=ping_interval_s)
        except queue.Empty:
            yield b": ping\n\n"
            continue
        if item is _END:
            return
        event_id += 1
        yield format_event(event_id, *item)


def sse_response(first: Iterable[tuple[str, dict]], events: Iterable[tuple[str, dict]],
                 ping_interval_s: float) -> Response:
    """`first` events go out at once; `events` (the turn) run in the background."""
    channel = run_in_background(events)
    response = Response(relay(channel, list(first), ping_interval_s), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response
