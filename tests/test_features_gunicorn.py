"""Search and the temporary sweep under real Gunicorn: several worker processes share one index,
and the sweep runs in the server by itself."""
from __future__ import annotations

import time

import pytest

from tests.servers import call, gunicorn

pytestmark = pytest.mark.slow
API = "/api/v1/conversations"


def test_index_in_step_across_workers_and_temporary_conversations_swept(tmp_path, fake):
    env = {"APSARA_DATA_DIR": str(tmp_path / "data"), "gemini": "k", "GEMINI_BASE_URL": fake.url,
           "GUNICORN_ACCESS_LOG": "/dev/null", "APSARA_TEMPORARY_TTL_H": "0.0005",  # 1.8 s
           "APSARA_TEMPORARY_SWEEP_S": "0.5"}
    with gunicorn(env, workers=3) as base:
        for n in range(12):  # spread over the workers by the kernel
            status, _ = call("POST", base + API, {"id": f"c{n}", "title": f"trip number{n}"})
            assert status == 201
        call("POST", base + API, {"id": "temp", "temporary": True})
        status, body = call("POST", f"{base}{API}/temp/messages", {"text": "a private matter", "stream": False})
        assert status == 201, body
        for n in range(12):
            status, body = call("GET", f"{base}{API}?q=number{n}")
            assert [c["id"] for c in body["conversations"]] == [f"c{n}"]
        status, body = call("GET", f"{base}{API}?q=trip&limit=100")
        assert len(body["conversations"]) == 12
        assert call("GET", f"{base}{API}?q=private")[1]["conversations"] == []
        assert [c["id"] for c in call("GET", f"{base}{API}?q=private&temporary=true")[1]["conversations"]] == ["temp"]
        call("DELETE", f"{base}{API}/c3")
        assert all(call("GET", f"{base}{API}?q=number3")[1]["conversations"] == [] for _ in range(6))
        deadline = time.monotonic() + 10
        while call("GET", f"{base}{API}/temp")[0] != 404:
            assert time.monotonic() < deadline, "the temporary conversation was never swept"
            time.sleep(0.2)
        assert call("GET", f"{base}{API}?q=private&temporary=true")[1]["conversations"] == []
        assert call("GET", f"{base}{API}/c1")[0] == 200
    # A new server finds the index in step with the files.
    with gunicorn(env, workers=2) as base:
        assert len(call("GET", f"{base}{API}?q=trip&limit=100")[1]["conversations"]) == 11
