"""Gunicorn settings, all from the environment and `.env` (read when Gunicorn starts).

The worker class is gevent: one worker holds hundreds of open reply streams
while each waits on Gemini, which gthread can only do with a thread per stream
(see the README's numbers). The app makes its Gemini client lazily in each
worker, after the fork.
"""
import gc
import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path

from dotenv import load_dotenv

from apsara import server as _server

# The same `.env` the app reads (beside this file); real environment variables win.
load_dotenv(Path(__file__).with_name(".env"), override=False)
_env = os.environ.get

# File URLs are signed with APSARA_SECRET_KEY. Without one, pick it here, in the
# master, so every worker signs and checks with the same key (until a restart).
# With APSARA_DATABASE_URL the replicas share a key kept in the database instead.
if not _env("APSARA_SECRET_KEY") and not _env("APSARA_DATABASE_URL"):
    os.environ["APSARA_SECRET_KEY"] = secrets.token_hex(32)

# Prometheus' multiprocess mode: each worker writes its samples to files in this
# folder and /metrics reads them all. It must be set before any worker imports
# prometheus_client, and emptied at each start (old workers' files would count).
_own_metrics_dir = not _env("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="apsara-metrics-")


def on_starting(server):
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):  # only the samples files: the folder may be the operator's
        if name.endswith(".db"):
            os.unlink(os.path.join(folder, name))


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def post_worker_init(worker):
    # Collect young objects every 50,000 allocations instead of 700: the SDK makes ~20
    # objects per message of history for each request, so with the default a 500-turn
    # turn set off dozens of collections, and the full ones (they walk every cached
    # conversation) took 50-270 ms. Measured on 500-turn turns, the time a request spent
    # collecting went from p90 75 ms to p90 6 ms. Cycles are still collected, a little later.
    gc.set_threshold(50_000, 20, 10)
    # Before the first request, not during it: a burst of streams arriving at a new
    # worker waited ~100 ms behind the Gemini client and the SDK's validators.
    services = getattr(worker.wsgi, "extensions", {}).get("apsara")  # None: the app is wrapped
    if services is not None:
        services.gemini.warm_up()
    # What the worker made to start (modules, the app, the SDK's types and validators: ~250,000
    # objects) lives as long as it does: leave it out of every collection from now on. A full
    # collection with 64 long conversations cached took ~225 ms, stalling every stream of the
    # worker, and ~40 ms without them. The garbage of the start is collected first. What is
    # frozen is never collected as a cycle again: nothing made before this point may be
    # dropped later while part of a reference cycle (the Gemini client, the app and its
    # services live as long as the worker; caches replace plain data).
    gc.collect()
    gc.freeze()
    _note_when_asked_to_stop(worker)


def worker_exit(server, worker):
    # Replies run as jobs beside the requests. Gunicorn waits for open requests when it stops a
    # worker gracefully (SIGTERM: a deploy, a restart); the replies whose client had left get
    # the rest of that time too, instead of being cut. The master kills the worker once
    # graceful_timeout has passed since it asked it to stop: a second before that, what is left
    # is checkpointed. A quick shutdown (SIGINT, SIGQUIT) only checkpoints.
    # The master calls this hook too, for a worker that vanished: it has no app there.
    services = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("apsara")
    if services is None:
        return
    asked = getattr(worker, "apsara_stop_asked", None)
    if asked is None:
        left = worker.cfg.graceful_timeout  # it stopped of itself (max_requests)
    elif asked[0] == signal.SIGTERM:
        left = worker.cfg.graceful_timeout - (time.monotonic() - asked[1])
    else:
        left = 0.0
    services.chat.jobs.drain(left - 1.0)


def _note_when_asked_to_stop(worker) -> None:
    """Gunicorn asks a worker to stop gracefully with SIGTERM, at once with SIGINT or SIGQUIT;
    its own handlers stay in charge."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        own = signal.getsignal(signum)

        def asked(number, frame, own=own):
            worker.apsara_stop_asked = (number, time.monotonic())
            if callable(own):
                own(number, frame)

        signal.signal(signum, asked)
    signal.siginterrupt(signal.SIGTERM, False)  # as Gunicorn set it: requests' system calls go on


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


bind = _env("GUNICORN_BIND") or f"0.0.0.0:{_env('PORT', '8000')}"
workers = int(_env("WEB_CONCURRENCY", "2"))
worker_class = _env("GUNICORN_WORKER_CLASS", "gevent")
worker_connections = int(_env("GUNICORN_WORKER_CONNECTIONS", "1000"))  # gevent
threads = int(_env("GUNICORN_THREADS", "100"))  # gthread
# Streams stay open for minutes while a model thinks; `: ping` keeps proxies happy.
timeout = int(_env("GUNICORN_TIMEOUT", "120"))
graceful_timeout = int(_env("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(_env("GUNICORN_KEEPALIVE", "5"))
# Behind a reverse proxy: trust its X-Forwarded-* only from the addresses given
# (addresses or networks, comma separated; `*` trusts any peer). The access log's
# %(h)s is then the client address the proxy reports.
forwarded_allow_ips = _env("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = _env("GUNICORN_ACCESS_LOG", "-")
errorlog = "-"
loglevel = _env("LOG_LEVEL", "info")
# Never log query strings or headers: file URLs carry signatures.
access_log_format = _env("GUNICORN_ACCESS_FORMAT", '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms pid=%(p)s')
if (_env("APSARA_LOG_FORMAT") or "").lower() == "json":
    # Gunicorn's own lines (start, worker exits) as JSON objects too.
    logconfig_dict = {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": "apsara.logging_setup.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json",
                                 "stream": "ext://sys.stderr"}},
        "loggers": {"gunicorn.error": {"level": loglevel.upper(), "handlers": ["console"], "propagate": False},
                    "gunicorn.access": {"level": "INFO", "handlers": ["console"] if accesslog else [],
                                        "propagate": False}},
    }
# Access lines with control characters escaped and the forwarded client address.
logger_class = "apsara.server.AccessLogger"
# Gunicorn's own answers (414, 431, 400 before the app) in the JSON error envelope.
_server.answer_errors_in_json()
