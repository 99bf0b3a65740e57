"""Hostile bodies against real Gunicorn (gevent workers, auth on), as an attacker sends them."""
from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from tests.servers import gunicorn, raw_exchange

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


def test_malformed_chunk_framing_is_400_and_stores_nothing(tmp_path):
    data = tmp_path / "data"
    env = {"APSARA_DATA_DIR": str(data), "APSARA_API_KEYS": "alice:key-a", "gemini": "k",
           "GEMINI_BASE_URL": "http://127.0.0.1:9"}
    with gunicorn(env, workers=1) as base:
        for framing in (b"ZZ\r\nabc\r\n0\r\n\r\n",  # a chunk size that is not hex
                        b"2\r\n{}XX0\r\n\r\n"):  # a chunk without its CRLF
            for path, content_type in (("/api/v1/conversations", "application/json"),
                                       ("/api/v1/files", "multipart/form-data; boundary=B"),
                                       ("/api/v1/conversations/import", "application/json"),
                                       ("/v1/chat/completions", "application/json")):
                status, body = raw_exchange(base, b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-a\r\n"
                                                 b"Content-Type: %s\r\nTransfer-Encoding: chunked\r\n"
                                                 b"Connection: close\r\n\r\n%s"
                                                 % (path.encode(), content_type.encode(), framing))
                assert status == 400 and "malformed" in json.dumps(body), (path, framing, body)
    leftovers = [p for p in (data / "files").rglob("*") if p.is_file()] if (data / "files").exists() else []
    assert leftovers == [] and not list((data / "history").rglob("*.json"))


def test_an_upload_of_a_type_no_model_reads_is_415_and_logs_no_traceback(tmp_path):
    # The type is told on a disk thread; gevent's pool printed what its task raised.
    data, log = tmp_path / "data", tmp_path / "server.log"
    env = {"APSARA_DATA_DIR": str(data), "APSARA_API_KEYS": "alice:key-a"}
    with gunicorn(env, workers=1, log_path=log) as base:
        for _ in range(3):
            status, body = chunked(base, "/api/v1/files", "multipart/form-data; boundary=B",
                                   [b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\n',
                                    b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 8, b"\r\n--B--\r\n"])
            assert status == 415 and body["error"]["status"] == "UNSUPPORTED_MEDIA_TYPE"
    written = log.read_text(errors="replace")
    assert "Traceback" not in written and "ApiError" not in written
    assert not [p for p in (data / "files").rglob("*") if p.is_file()]


def test_a_multipart_upload_cut_short_is_400_as_a_json_body_is(tmp_path):
    # The client sent part of what its Content-Length announced, then half-closed: the form
    # parsed as one without its file (a misleading 422).
    data = tmp_path / "data"
    env = {"APSARA_DATA_DIR": str(data), "APSARA_API_KEYS": "alice:key-a"}
    body = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nplain text, enough'
    with gunicorn(env, workers=1) as base:
        status, answer = raw_exchange(base, b"POST /api/v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-a\r\n"
                                            b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: %d\r\n"
                                            b"Connection: close\r\n\r\n%s" % (len(body) + 500, body), half_close=True)
    assert status == 400, answer
    assert f"ended after {len(body)} of the {len(body) + 500} bytes" in answer["error"]["message"]
    assert not [p for p in (data / "files").rglob("*") if p.is_file()]
