"""Hostile bodies against real Gunicorn (gevent workers, auth on), as an attacker sends them."""
from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from tests.servers import gunicorn

pytestmark = pytest.mark.slow
KEY = {"Authorization": "Bearer key-a"}


def chunked(base: str, path: str, content_type: str, pieces) -> tuple[int, dict]:
    """Send a body with Transfer-Encoding: chunked (no length), piece by piece."""
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.putrequest("POST", path)
    for name, value in {**KEY, "Content-Type": content_type, "Transfer-Encoding": "chunked"}.items():
        connection.putheader(name, value)
    connection.endheaders()
    try:
        for piece in pieces:
            connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        connection.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered (413) and closed before the whole body went out
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    return response.status, body


def test_chunked_bodies_over_the_limits_under_gunicorn(tmp_path):
    data = tmp_path / "data"
    env = {"APSARA_DATA_DIR": str(data), "APSARA_API_KEYS": "alice:key-a", "APSARA_MAX_UPLOAD_MB": "2"}
    with gunicorn(env, workers=1) as base:
        head = b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
        status, body = chunked(base, "/api/v1/files", "multipart/form-data; boundary=B",
                               [head] + [b"a" * 65536] * 64 + [b"\r\n--B--\r\n"])
        assert status == 413 and body["error"]["status"] == "PAYLOAD_TOO_LARGE"
        status, body = chunked(base, "/api/v1/conversations", "application/json",
                               [b'{"title": "'] + [b"a" * 65536] * 64 + [b'"}'])
        assert status == 413 and body["error"]["status"] == "PAYLOAD_TOO_LARGE"
        status, body = chunked(base, "/api/v1/conversations", "application/json",
                               [b'{"title": "', b'\\ud800"}'])
        assert status == 400 and "surrogate" in body["error"]["message"]
        status, body = chunked(base, "/api/v1/conversations", "application/json", [b"[" * 965, b"]" * 965])
        assert status == 400 and "nested deeper" in body["error"]["message"]
    leftovers = [p for p in (data / "files").rglob("*") if p.is_file()] if (data / "files").exists() else []
    assert leftovers == []
    assert not list((data / "history").rglob("*.json"))
