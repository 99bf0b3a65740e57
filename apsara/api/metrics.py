"""`GET /metrics` (Prometheus text, behind APSARA_METRICS_TOKEN) and per-request metrics.

404 when the token is unset, so the endpoint does not exist unless an operator
asks for it; 401 for a missing or wrong token (compared in constant time).
"""
from __future__ import annotations

import hmac
import time

from flask import Flask, Response, current_app, g, request

from .. import metrics
from ..errors import ApiError


def route_of() -> str:
    """The route template, never the raw path (a client chooses that)."""
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


# HTTP's own methods. A client can send any token as a method, and each new label
# value is a new series kept for the process's life: the rest share one label.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


def method_of() -> str:
    """The request's method as a label: one of HTTP's, else "other"."""
    return request.method if request.method in KNOWN_METHODS else "other"


def observe_request(status: int) -> None:
    route, method = route_of(), method_of()
    metrics.REQUESTS.labels(route, method, str(status)).inc()
    started = g.get("apsara_started")
    if started is not None:
        metrics.REQUEST_SECONDS.labels(route, method).observe(time.perf_counter() - started)


def metrics_view():
    token = current_app.extensions["apsara"].settings.metrics_token
    if not token:
        raise ApiError(404, "no such resource")
    scheme, _, given = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "a valid 'Authorization: Bearer <APSARA_METRICS_TOKEN>' header is required",
                       headers={"WWW-Authenticate": "Bearer"})
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


def register_metrics(app: Flask) -> None:
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
