"""Request ids and log lines: one line per request, no secrets, nothing forged."""
from __future__ import annotations

import json
import logging
import socket

import pytest

from apsara.logging_setup import JsonFormatter, TextFormatter
from apsara.testing.fake_gemini import Reply
from tests.servers import call, gunicorn


def test_every_answer_carries_a_request_id(client):
    given = client.get("/api/v1/conversations", headers={"X-Request-Id": "trace-42.a:b"})
    assert given.headers["X-Request-Id"] == "trace-42.a:b"
    for insane in ("has space", "x" * 200, "ünïcode", ""):
        answer = client.get("/api/v1/conversations", headers={"X-Request-Id": insane})
        made = answer.headers["X-Request-Id"]
        assert made != insane and made.startswith("req-")
    for response in (client.get("/no/such/path"), client.get("/health"),
                     client.post("/api/v1/conversations", data="{bad", content_type="application/json")):
        assert response.headers["X-Request-Id"].startswith("req-")


def test_one_line_per_request_with_its_fields(chat, fake, caplog):
    chat.post("/api/v1/conversations", json={"id": "c1"})
    with caplog.at_level(logging.INFO, logger="apsara.request"):
        fake.push(Reply(parts=["the", " answer"]))
        chat.post("/api/v1/conversations/c1/messages", json={"text": "private words"},
                  headers={"X-Request-Id": "turn-1"})
        chat.get("/api/v1/conversations/c1", headers={"X-Request-Id": "read-1"})
    lines = [r for r in caplog.records if r.name == "apsara.request"]
    assert [r.request_id for r in lines] == ["turn-1", "read-1"]
    turn = lines[0]
    assert (turn.user, turn.method, turn.route, turn.status) == (
        "local", "POST", "/api/v1/conversations/<conversation_id>/messages", 201)
    assert turn.model == "gemini-3.8-flash" and turn.output_tokens == 2 and turn.duration_ms > 0
    assert 0 < turn.gemini_ms < turn.duration_ms  # the time in Gemini calls: the rest was Apsara's
    assert not hasattr(lines[1], "model")  # not a turn
    for formatter in (JsonFormatter(), TextFormatter()):
        text = formatter.format(turn)
        assert "\n" not in text and "private words" not in text and "answer" not in text
    assert json.loads(JsonFormatter().format(turn))["request_id"] == "turn-1"


def test_text_lines_cannot_be_forged():
    record = logging.LogRecord("apsara", logging.WARNING, __file__, 1, "looked up %s", ("x\nFAKE INFO admin",), None)
    record.route = "/a\r\nFAKE"
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "x\\nFAKE" in line


@pytest.mark.slow
def test_json_lines_under_gunicorn_hold_no_secrets(tmp_path, fake):
    log = tmp_path / "gunicorn.log"
    env = {"APSARA_DATA_DIR": str(tmp_path / "data"), "gemini": "gemini-key-SECRET", "GEMINI_BASE_URL": fake.url,
           "APSARA_API_KEYS": "alice:alice-key-SECRET", "APSARA_LOG_FORMAT": "json", "LOG_LEVEL": "info"}
    auth = {"Authorization": "Bearer alice-key-SECRET"}
    with gunicorn(env, workers=2, log_path=log) as base:
        url = f"{base}/api/v1/conversations"
        assert call("POST", url, {"id": "c1"}, auth)[0] == 201
        fake.push(Reply(parts=["reply text PRIVATE-OUT"]))
        assert call("POST", f"{url}/c1/messages", {"text": "message text PRIVATE-IN"}, auth)[0] == 201
        host, port = base.removeprefix("http://").split(":")
        for raw in (b"GET /api/v1/conversations/a%0A%7B%22level%22:%22ERROR%22%7D HTTP/1.1\r\n",
                    b"GET /nothing%0d%0aforged HTTP/1.1\r\n"):
            with socket.create_connection((host, int(port))) as conn:
                conn.sendall(raw + b"Host: x\r\nAuthorization: Bearer alice-key-SECRET\r\n"
                                   b"X-Request-Id: a\xc2\x85b\r\nConnection: close\r\n\r\n")
                assert b"X-Request-Id" in conn.recv(65536)
        assert call("GET", url, None, {**auth, "X-Request-Id": "forged\x85line"})[0] == 200
    lines = log.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    requests = [e for e in entries if e.get("message") == "request" and not e["route"].startswith("/health")]
    assert len(requests) == 5
    assert {e["route"] for e in requests} >= {"/api/v1/conversations/<conversation_id>", "unmatched"}
    turn = next(e for e in requests if e["route"].endswith("/messages"))
    assert turn["user"] == "alice" and turn["model"] and turn["total_tokens"] > 0
    assert all(set(e) >= {"request_id", "user", "route", "status", "duration_ms"} for e in requests)
    assert not any("forged" in e["request_id"] or "\x85" in e["request_id"] for e in requests)
    # Gunicorn's access lines quote the path, escaped, inside their own JSON object.
    assert not any(e.get("level") == "ERROR" for e in entries)
    text = log.read_text()
    for secret in ("SECRET", "PRIVATE-IN", "PRIVATE-OUT"):
        assert secret not in text


def test_browsers_may_read_the_request_id(tmp_path):
    from apsara import create_app
    from tests.conftest import make_settings

    client = create_app(make_settings(tmp_path, cors_origins=["https://app.example"])).test_client()
    answer = client.get("/api/v1/conversations", headers={"Origin": "https://app.example"})
    assert "X-Request-Id" in answer.headers["Access-Control-Expose-Headers"]
