"""What happens around every request: its id, rate limits, metrics and its log line.

Before: a request id (the client's `X-Request-Id` when it is sane, else a new
one), then, once the user is known, the rate limits (requests, uploads, and a
stream slot for a turn that asked to stream). After: `X-Request-Id` on the
answer, request metrics, and one log line per request, written when the answer
is finished (for a stream, when it closes, with the turn's model and tokens).
"""
from __future__ import annotations

import logging
import os
import re
import time

from flask import Flask, current_app, g, has_request_context, request

from .. import metrics
from ..clock import new_id
from .metrics import observe_request, route_of

log = logging.getLogger("apsara.request")
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
NEVER_LIMITED = ("/health", "/metrics", "/api/v1/openapi.json", "/api/v1/docs")
TURN_ENDPOINTS = {"messages.send", "messages.edit", "messages.regenerate", "generate.generate",
                  "openai.chat_completions"}
FOLLOW_ENDPOINTS = {"messages.events"}  # always a stream


def _services():
    return current_app.extensions["apsara"]


def start_request() -> None:
    given = request.headers.get("X-Request-Id", "")
    g.request_id = given if SANE_REQUEST_ID.match(given) else new_id("req-")
    g.apsara_started = time.perf_counter()
    g.bills = []


def wants_stream() -> bool:
    body = request.get_json(silent=True) if request.is_json else None
    if isinstance(body, dict) and isinstance(body.get("stream"), bool):
        return body["stream"]
    return "text/event-stream" in (request.headers.get("Accept") or "")


def apply_rate_limits() -> None:
    limits = _services().rate_limits
    user = g.get("user")
    if not limits.enabled or user is None or request.path.startswith(NEVER_LIMITED):
        return
    limits.hit("requests", user)
    if request.method == "POST" and request.path == "/api/v1/files":
        limits.hit("uploads", user)
    if request.endpoint in FOLLOW_ENDPOINTS or (request.endpoint in TURN_ENDPOINTS and wants_stream()):
        g.stream_slot = limits.open_stream(user)


def note_bill(bill) -> None:
    """The usage service's new bills, so the request's line can tell model and tokens."""
    if has_request_context() and "bills" in g:
        g.bills.append(bill)


def finish_request(response):
    response.headers["X-Request-Id"] = g.get("request_id") or new_id("req-")
    observe_request(response.status_code)
    done = _closer(response.status_code)
    if response.mimetype == "text/event-stream":
        metrics.ACTIVE_STREAMS.inc()
        response.call_on_close(lambda: (metrics.ACTIVE_STREAMS.dec(), done()))
    else:
        done()
    return response


def _closer(status: int):
    """Free the stream slot and write the request's line, once."""
    limits, slot = _services().rate_limits, g.pop("stream_slot", None)
    fields = {"request_id": g.get("request_id"), "user": g.get("user"), "method": request.method,
              "route": route_of(), "status": status, "pid": os.getpid()}
    started, bills = g.get("apsara_started"), g.get("bills") or []
    finished = []

    def done():
        if finished:
            return
        finished.append(True)
        try:
            limits.close_stream(slot)
        finally:
            line = dict(fields)
            if started is not None:
                line["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
            for bill in bills:
                totals = bill.totals()
                if totals["model"]:
                    line.update(totals)
            log.info("request", extra=line)
    return done


def abandon_request(error=None) -> None:
    """A request that ended without an answer (a crash in a hook) still frees its slot."""
    slot = g.pop("stream_slot", None)
    if slot is not None:
        _services().rate_limits.close_stream(slot)


def register_hooks(app: Flask) -> None:
    """`start_request` runs first of all; rate limits run after authentication."""
    app.before_request_funcs.setdefault(None, []).insert(0, start_request)
    app.before_request(apply_rate_limits)
    app.after_request(finish_request)
    app.teardown_request(abandon_request)
