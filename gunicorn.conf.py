"""Gunicorn settings, all from the environment (read when Gunicorn starts).

The worker class is gevent: one worker holds hundreds of open reply streams
while each waits on Gemini, which gthread can only do with a thread per stream
(see the README's numbers). The app makes its Gemini client lazily in each
worker, after the fork.
"""
import os
import secrets

_env = os.environ.get

# File URLs are signed with APSARA_SECRET_KEY. Without one, pick it here, in the
# master, so every worker signs and checks with the same key (until a restart).
# With APSARA_DATABASE_URL the replicas share a key kept in the database instead.
if not _env("APSARA_SECRET_KEY") and not _env("APSARA_DATABASE_URL"):
    os.environ["APSARA_SECRET_KEY"] = secrets.token_hex(32)

bind = _env("GUNICORN_BIND") or f"0.0.0.0:{_env('PORT', '8000')}"
workers = int(_env("WEB_CONCURRENCY", "2"))
worker_class = _env("GUNICORN_WORKER_CLASS", "gevent")
worker_connections = int(_env("GUNICORN_WORKER_CONNECTIONS", "1000"))  # gevent
threads = int(_env("GUNICORN_THREADS", "100"))  # gthread
# Streams stay open for minutes while a model thinks; `: ping` keeps proxies happy.
timeout = int(_env("GUNICORN_TIMEOUT", "120"))
graceful_timeout = int(_env("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(_env("GUNICORN_KEEPALIVE", "5"))
# Behind a reverse proxy: trust its X-Forwarded-* only from the addresses given.
forwarded_allow_ips = _env("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = _env("GUNICORN_ACCESS_LOG", "-")
errorlog = "-"
loglevel = _env("LOG_LEVEL", "info")
# Never log query strings or headers: file URLs carry signatures.
access_log_format = _env("GUNICORN_ACCESS_FORMAT", '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms pid=%(p)s')
