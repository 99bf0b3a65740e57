"""Start real processes for tests: Gunicorn serving the app, on a free loopback port."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from apsara.devserver import free_port  # noqa: F401 (tests import it from here)

ROOT = Path(__file__).resolve().parent.parent
MASTERS: dict[str, int] = {}  # base URL -> pid of the Gunicorn master serving it


def wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise TimeoutError(url)


@contextlib.contextmanager
def gunicorn(env: dict, workers: int = 2, worker_class: str = "gevent", log_path: Path | None = None,
             app: str = "wsgi:app"):
    port = free_port()
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("gemini", "GEMINI_API_KEY", "GOOGLE_API_KEY", "APSARA_SECRET_KEY")}
    full_env.update({"GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(workers),
                     "GUNICORN_WORKER_CLASS": worker_class, "LOG_LEVEL": "warning"}, **env)
    log = open(log_path or os.devnull, "wb")
    # Its own process group, so the workers go with the master whatever happens.
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", app], cwd=ROOT, env=full_env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    MASTERS[base] = process.pid
    try:
        wait_for(base + "/health/live")
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        MASTERS.pop(base, None)


def call(method: str, url: str, body=None, headers=None, timeout: float = 30):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        **({"Content-Type": "application/json"} if data else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, (json.loads(raw) if raw else None)


def raw_exchange(base: str, request: bytes, half_close: bool = False) -> tuple[int, dict]:
    """Bytes as a client (or an attacker) writes them, on a connection of their own; with
    `half_close`, the client then stops sending. Returns (status, JSON answer)."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=30) as connection:
        connection.sendall(request)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)
