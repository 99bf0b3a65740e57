"""The README's nginx site in front of real Gunicorn: streams, uploads, client addresses, refusals."""
from __future__ import annotations

import json
import re
import socket
import time

import pytest

from apsara.testing.fake_gemini import FakeGemini, Reply
from tests.nginx import nginx
from tests.servers import ROOT, call, free_port, gunicorn

pytestmark = pytest.mark.slow
SITE = ROOT / "deploy" / "nginx-site.conf"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    folder = tmp_path_factory.mktemp("proxy")
    fake = FakeGemini().start()
    env = {"APSARA_DATA_DIR": str(folder / "data"), "gemini": "k", "GEMINI_BASE_URL": fake.url}
    log = folder / "gunicorn.log"
    try:
        with gunicorn(env, workers=1, log_path=log) as upstream:
            with nginx(SITE, int(upstream.rsplit(":", 1)[1]), folder / "nginx") as base:
                yield base, fake, log
    finally:
        fake.stop()


def _complete(received: bytes) -> bool:
    """A whole answer with a Content-Length is in (nginx may keep the socket a while after a refusal)."""
    head, sep, body = received.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return bool(sep and length and len(body) >= int(length[1]))


def _exchange(base: str, request: bytes, source: str = "127.0.0.1", on_data=None) -> bytes:
    """Send bytes as they are; what came back, once the answer is complete or the server closed."""
    host, port = base.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.bind((source, 0))
        sock.connect((host, int(port)))
        sock.sendall(request)
        received = b""
        while not _complete(received) and (chunk := sock.recv(65536)):
            received += chunk
            if on_data:
                on_data(received)
    return received


def test_a_reply_streams_through_nginx_as_it_is_written(proxied):
    base, fake, _ = proxied
    assert call("POST", f"{base}/api/v1/conversations", {"id": "streamed"})[0] == 201
    fake.push(Reply(parts=[f"word{n} " for n in range(5)], chunk_delay_s=0.5))
    body = json.dumps({"text": "go", "stream": True}).encode()
    arrivals: list[float] = []

    def note(received: bytes) -> None:
        while received.count(b"event: delta") > len(arrivals):
            arrivals.append(time.monotonic())

    raw = _exchange(base, b"POST /api/v1/conversations/streamed/messages HTTP/1.1\r\nHost: api.example\r\n"
                          b"Content-Type: application/json\r\nConnection: close\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body, on_data=note)
    assert b"text/event-stream" in raw and b"event: done" in raw
    assert len(arrivals) == 5
    # Buffered, all five would land together at the end; streamed, they come ~0.5 s apart.
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    assert min(gaps) > 0.2, gaps


def test_the_log_names_the_client_nginx_reports_not_what_the_client_claims(proxied):
    base, _, log = proxied
    # 127.0.0.2 stands for a client on the internet; nginx is the trusted proxy on 127.0.0.1
    _exchange(base, b"GET /health/live?who=client HTTP/1.1\r\nHost: api.example\r\n"
                    b"X-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n", source="127.0.0.2")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in log.read_text().splitlines() if '"GET /health/live"' in line]
        if any(line.startswith("127.0.0.2 ") for line in lines):
            break
        time.sleep(0.1)
    assert any(line.startswith("127.0.0.2 ") for line in lines), lines
    assert not any("6.6.6.6" in line for line in lines)


def test_uploads_beyond_nginxs_default_size_pass(proxied):
    base, _, _ = proxied
    content = b"a line of text\n" * (3 * 1024 * 1024 // 15)  # 3 MB; nginx's default limit is 1 MB
    boundary = b"b0undary"
    body = (b"--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n\r\n%s\r\n--%s--\r\n"
            % (boundary, content, boundary))
    raw = _exchange(base, b"POST /api/v1/files HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n"
                          b"Content-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n"
                          % (boundary, len(body)) + body)
    head, _, answer = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201"), head
    assert json.loads(answer)["size_bytes"] == len(content)


def test_nginxs_own_refusal_is_the_json_envelope(proxied):
    base, _, _ = proxied
    raw = _exchange(base, b"POST /api/v1/files HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n"
                          b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 209715200\r\n\r\n")
    head, _, answer = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"application/json" in head
    assert json.loads(answer)["error"]["status"] == "PAYLOAD_TOO_LARGE"


def test_the_readme_shows_the_tested_site():
    assert SITE.read_text().strip() in (ROOT / "README.md").read_text()


def test_nginx_answers_json_when_gunicorn_is_down(tmp_path):
    with nginx(SITE, free_port(), tmp_path / "nginx") as base:
        status, body = call("GET", f"{base}/api/v1/models")
    assert status == 502
    assert body["error"]["status"] == "UPSTREAM_ERROR" and set(body["error"]) == {"code", "status", "message",
                                                                                   "details"}


def test_nginxs_own_refusal_on_v1_is_openais_shape(proxied):
    base, _, _ = proxied
    raw = _exchange(base, b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 209715200\r\n\r\n")
    head, _, answer = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"application/json" in head
    error = json.loads(answer)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"


def test_nginx_answers_openais_shape_on_v1_when_gunicorn_is_down(tmp_path):
    with nginx(SITE, free_port(), tmp_path / "nginx") as base:
        status, body = call("GET", f"{base}/v1/models")
        api_status, api_body = call("GET", f"{base}/api/v1/models")
    assert status == 502 and body["error"]["type"] == "server_error" and body["error"]["code"] == "upstream_error"
    assert api_status == 502 and api_body["error"]["status"] == "UPSTREAM_ERROR"
