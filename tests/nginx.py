"""A real nginx for tests, in a temporary folder on a loopback port, serving a site file of the repo.

`nginx(site, upstream_port, folder)` rewrites the site's `listen` and upstream
`server` lines to free loopback ports, wraps it in a minimal main configuration
(everything under `folder`, one process as the current user) and yields the base URL.
"""
from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from pathlib import Path

from tests.servers import free_port
from tests.tools import need_program


def _wait_until_listening(port: int, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "nginx exited at start"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nginx did not listen on {port}")


@contextlib.contextmanager
def nginx(site: Path, upstream_port: int, folder: Path):
    executable = need_program("nginx", "nginx")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    text = site.read_text()
    text, listens = re.subn(r"(?m)^(\s*)listen\s+80;", rf"\g<1>listen 127.0.0.1:{port};", text)
    text, servers = re.subn(r"(?m)^(\s*)server\s+127\.0\.0\.1:8000;", rf"\g<1>server 127.0.0.1:{upstream_port};", text)
    assert listens == 1 and servers == 1, "the site file no longer has the lines this test rewrites"
    (folder / "site.conf").write_text(text)
    temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    (folder / "nginx.conf").write_text(f"""
daemon off;
master_process off;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {temp['body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    include {folder}/site.conf;
}}
""")
    check = subprocess.run([executable, "-t", "-p", str(folder), "-e", str(folder / "error.log"),
                            "-c", str(folder / "nginx.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen([executable, "-p", str(folder), "-e", str(folder / "error.log"),
                                "-c", str(folder / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_listening(port, process)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
