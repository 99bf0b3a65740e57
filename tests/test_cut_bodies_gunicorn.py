"""A body cut short of its Content-Length under real Gunicorn: 400, and nothing acted on.

Gunicorn ends a request's body where the client stopped sending (it half-closed
the connection), so the app sees a prefix that may well be valid JSON. Werkzeug's
own server refuses such a body itself, hence real Gunicorn here.
"""
from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from tests.servers import call, gunicorn, raw_exchange

pytestmark = pytest.mark.slow


def send_cut(base: str, path: str, body: bytes, announced: int, method: str = "POST") -> tuple[int, dict]:
    """`body` under a Content-Length of `announced`, then half-close: (status, JSON answer)."""
    url = urlsplit(base)
    head = (f"{method} {path} HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {announced}\r\nConnection: close\r\n\r\n").encode()
    return raw_exchange(base, head + body, half_close=True)


def test_a_body_shorter_than_its_content_length_is_400_and_not_acted_on(tmp_path):
    data = tmp_path / "data"
    with gunicorn({"APSARA_DATA_DIR": str(data)}, workers=1) as base:
        assert call("POST", f"{base}/api/v1/conversations", {"id": "trip"})[0] == 201
        whole = json.dumps({"id": "cut", "title": "t"}).encode()
        status, answer = send_cut(base, "/api/v1/conversations", whole, 1000)
        assert status == 400 and answer["error"]["status"] == "INVALID_ARGUMENT"
        assert f"after {len(whole)} of the 1000 bytes" in answer["error"]["message"]
        assert call("GET", f"{base}/api/v1/conversations/cut")[0] == 404

        status, answer = send_cut(base, "/api/v1/conversations/trip", b'{"title": "renamed"}', 500, "PATCH")
        assert status == 400
        assert call("GET", f"{base}/api/v1/conversations/trip")[1]["title"] != "renamed"

        question = {"model": "gemini-3.8-flash", "messages": [{"role": "user", "content": "hi"}]}
        status, answer = send_cut(base, "/v1/chat/completions", json.dumps(question).encode(), 4096)
        assert status == 400 and set(answer["error"]) == {"message", "type", "param", "code"}
        assert "Content-Length" in answer["error"]["message"]

        status, _ = send_cut(base, "/api/v1/conversations/trip", b'{"title": "renamed"}', 20, "PATCH")
        assert status == 200
        # The same body whole is taken, so it was the cut that was refused.
        status, _ = send_cut(base, "/api/v1/conversations", whole, len(whole))
        assert status == 201
        assert [c["id"] for c in call("GET", f"{base}/api/v1/conversations")[1]["conversations"]] == ["cut", "trip"]
