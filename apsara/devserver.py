"""`make run`: start the server on this machine.

With a Gemini key configured this is plain Gunicorn. Without one it first starts
the bundled offline Gemini fake on a loopback port and points the server at it,
saying so loudly, so a newcomer can chat with no key and no network.
`gunicorn wsgi:app` (the Docker command) never does this.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from .config import GEMINI_KEY_VARIABLES


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the offline Gemini fake did not start")


def main() -> int:
    from dotenv import load_dotenv

    load_dotenv(override=False)
    env = dict(os.environ)
    env.setdefault("PORT", "8000")
    env.setdefault("GUNICORN_BIND", f"127.0.0.1:{env['PORT']}")
    children = []
    if not any(env.get(name) for name in GEMINI_KEY_VARIABLES):
        port = free_port()
        children.append(subprocess.Popen([sys.executable, "-m", "apsara.testing.fake_gemini",
                                          "--port", str(port)]))
        _wait_until_listening(port)
        env.update({"gemini": "offline-fake-key", "GEMINI_BASE_URL": f"http://127.0.0.1:{port}",
                    "APSARA_OFFLINE_FAKE": "1"})
        print("!" * 76 + "\n"
              f"!!  NO GEMINI KEY: replies come from the OFFLINE FAKE at http://127.0.0.1:{port}\n"
              "!!  It echoes what you send. Set the variable 'gemini' (or put it in .env)\n"
              "!!  to talk to the real Gemini API.\n" + "!" * 76, file=sys.stderr, flush=True)
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "wsgi:app"], env=env)
    children.insert(0, server)

    def stop(*_):
        for child in children:
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        code = server.wait()
    finally:
        stop()
        for child in children:
            child.wait()
    return code


if __name__ == "__main__":
    sys.exit(main())
