"""Prometheus metrics: what the server does, from every worker process.

Under Gunicorn each worker writes its samples to files in
`PROMETHEUS_MULTIPROC_DIR` (gunicorn.conf.py makes and empties it at start and
tells the client library when a worker exits), and `GET /metrics` reads them all.
Without that variable (one process, as in tests) the process's own registry is
served. `GET /metrics` itself is in `api/metrics.py`. The metric objects are
module-level because prometheus-client keeps them per process; the rest of the
service goes through the small functions below.
"""
from __future__ import annotations

import contextlib
import os
import time

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

REQUESTS = Counter("apsara_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
REQUEST_SECONDS = Histogram("apsara_http_request_duration_seconds", "Time to answer (a stream: to its headers)",
                            ["route", "method"], buckets=LATENCY)
GEMINI_CALLS = Counter("apsara_gemini_calls_total", "Generate calls to Gemini", ["model", "purpose", "outcome"])
GEMINI_SECONDS = Histogram("apsara_gemini_call_duration_seconds", "Whole Gemini call", ["model"], buckets=LATENCY)
GEMINI_FIRST_TOKEN = Histogram("apsara_gemini_time_to_first_token_seconds", "Streamed call to its first content",
                               ["model"], buckets=LATENCY)
TOKENS = Counter("apsara_gemini_tokens_total", "Tokens Gemini reported", ["model", "kind"])
COST = Counter("apsara_gemini_cost_usd_total", "Estimated cost from the price table", ["model"])
ACTIVE_STREAMS = Gauge("apsara_active_streams", "Reply streams open now", multiprocess_mode="livesum")
STORE_WRITE_SECONDS = Histogram("apsara_store_write_duration_seconds", "Durable write of one file (a snapshot, or records appended and fsynced)", buckets=FAST)
AUTO_DECISIONS = Counter("apsara_auto_decisions_total", "Turns routed by `auto`", ["tier", "classifier"])
BUDGET_REFUSALS = Counter("apsara_budget_refusals_total", "Turns refused by a budget", ["limit"])
RATE_LIMITED = Counter("apsara_rate_limited_total", "Requests refused by a rate limit", ["limit"])

TOKEN_KINDS = {"prompt_tokens": "prompt", "output_tokens": "output", "thought_tokens": "thought",
               "cached_tokens": "cached"}


def gemini_call(record, cost_usd: float) -> None:
    GEMINI_CALLS.labels(record.model, record.purpose, record.outcome).inc()
    GEMINI_SECONDS.labels(record.model).observe(record.duration_s)
    if record.first_token_s is not None:
        GEMINI_FIRST_TOKEN.labels(record.model).observe(record.first_token_s)
    for field, kind in TOKEN_KINDS.items():
        count = (record.usage or {}).get(field)
        if count:
            TOKENS.labels(record.model, kind).inc(count)
    if cost_usd:
        COST.labels(record.model).inc(cost_usd)


def auto_decision(routing) -> None:
    AUTO_DECISIONS.labels(routing.tier or "none", routing.classifier or "none").inc()


def budget_refused(limit: str) -> None:
    BUDGET_REFUSALS.labels(limit).inc()


def rate_limited(limit: str) -> None:
    RATE_LIMITED.labels(limit).inc()


@contextlib.contextmanager
def timed_store_write():
    """Around one durable write of the store."""
    started = time.perf_counter()
    try:
        yield
    finally:
        store_write_took(time.perf_counter() - started)


def store_write_took(seconds: float) -> None:
    """One durable write of the store, timed elsewhere: on a disk thread, which must not take
    the metrics' lock (gevent's, under gevent) that greenlets take."""
    STORE_WRITE_SECONDS.observe(seconds)


def exposition() -> tuple[bytes, str]:
    """(the text format, its content type), from every worker when under Gunicorn."""
    registry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
