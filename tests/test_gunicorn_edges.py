"""What Gunicorn itself writes: access-log lines (client address, no forged lines) and its own error answers."""
from __future__ import annotations

import json
import socket

import pytest

from apsara.server import client_address, printable
from tests.servers import gunicorn

TRUSTED = ["127.0.0.1", "::1", "10.0.0.0/8"]


@pytest.mark.parametrize("peer, forwarded, client", [
    ("127.0.0.1", "203.0.113.7", "203.0.113.7"),                 # one trusted proxy
    ("127.0.0.1", "6.6.6.6, 203.0.113.7", "203.0.113.7"),        # what the client wrote itself is ignored
    ("127.0.0.1", "203.0.113.7, 10.1.2.3", "203.0.113.7"),       # through two trusted proxies
    ("127.0.0.1", "junk, 10.1.2.3", "10.1.2.3"),                 # garbage stops the walk
    ("127.0.0.1", None, "127.0.0.1"),
    ("198.51.100.4", "203.0.113.7", "198.51.100.4"),             # an untrusted peer is the client
    ("::1", "2001:db8::5", "2001:db8::5"),
    ("", "203.0.113.7", "203.0.113.7"),                          # nginx on a unix socket
])
def test_client_address_comes_from_trusted_proxies_only(peer, forwarded, client):
    assert client_address(peer, forwarded, TRUSTED) == client


def test_printable_escapes_what_could_start_a_line():
    assert printable('/a\n1.2.3.4 "GET /x" 200\r\x1b[2J\u2028') == '/a\\x0a1.2.3.4 "GET /x" 200\\x0d\\x1b[2J\\u2028'


def _raw(port: int, request: bytes, source: str = "127.0.0.1") -> tuple[str, dict[str, str], bytes]:
    """Send bytes as they are (no client library tidies them up); the status, headers and body."""
    with socket.socket() as sock:
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status_line, headers, body


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edges")
    log = folder / "gunicorn.log"
    with gunicorn({"APSARA_DATA_DIR": str(folder / "data")}, workers=1, log_path=log) as base:
        yield int(base.rsplit(":", 1)[1]), log


@pytest.mark.slow
def test_a_newline_in_the_url_cannot_forge_a_log_line(served):
    port, log = served
    forged = '%0a203.0.113.66%20%22GET%20/api/v1/admin%22%20200%200%201ms%20pid=1'
    status, _, _ = _raw(port, f"GET /nowhere{forged} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    assert " 404 " in status
    lines = log.read_text().splitlines()
    assert not any(line.startswith("203.0.113.66") for line in lines)
    [line] = [line for line in lines if "/nowhere" in line]
    assert line.startswith('127.0.0.1 "GET /nowhere\\x0a203.0.113.66 ')


@pytest.mark.slow
def test_the_log_names_the_client_a_trusted_proxy_reports(served):
    port, log = served
    # 127.0.0.1 is a trusted proxy (the default FORWARDED_ALLOW_IPS): its word is taken
    _raw(port, b"GET /health/live?from=proxy HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\n"
               b"Connection: close\r\n\r\n")
    # 127.0.0.2 is not: whatever it claims, the log names it
    _raw(port, b"GET /health/live?from=other HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.8\r\n"
               b"Connection: close\r\n\r\n", source="127.0.0.2")
    lines = [line for line in log.read_text().splitlines() if "/health/live" in line]
    assert any(line.startswith('203.0.113.7 "GET /health/live"') for line in lines)
    assert any(line.startswith('127.0.0.2 "GET /health/live"') for line in lines)
    assert not any("203.0.113.8" in line for line in lines)


@pytest.mark.slow
@pytest.mark.parametrize("request_bytes, code", [
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-H%d: v\r\n" % n for n in range(150)) + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: v\r\n\r\n", 400),
], ids=["long-url", "many-headers", "big-header", "bad-header-name"])
def test_gunicorns_own_answers_are_the_json_envelope(served, request_bytes, code):
    port, _ = served
    status, headers, body = _raw(port, request_bytes)
    assert status.startswith(f"HTTP/1.1 {code} ")
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == code and set(error) == {"code", "status", "message", "details"}
    assert "<html" not in body.decode() and "aaaa" not in error["message"]
