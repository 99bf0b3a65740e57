"""A worker gets ready for its first reply before the first request; the standalone fake stays small."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request

from apsara.testing.fake_gemini import FakeGemini
from tests.servers import ROOT, call, gunicorn


def test_warm_up_builds_the_client_and_the_reply_types_once_per_process(fake):
    script = textwrap.dedent(f"""
        import json
        from google.genai import types
        from apsara.config import Settings
        from apsara.gemini.client import REPLY_TYPES, GeminiClient
        built = lambda: [getattr(types, n).__pydantic_complete__ for n in REPLY_TYPES]
        before = built()
        client = GeminiClient(Settings(gemini_api_key="k", gemini_base_url={fake.url!r}, secret_key="s"))
        client.warm_up()
        print(json.dumps({{"before": before, "after": built(), "client": client._client is not None,
                          "same": client.sdk is client._client}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert not any(result["before"])  # the SDK defers them: without the warm-up the first reply builds them
    assert all(result["after"]) and result["client"] and result["same"]
    assert fake.requests == []  # made without a single call to Gemini


def test_a_wrapped_app_still_starts_with_the_gunicorn_settings(tmp_path, fake):
    # post_worker_init warms the app's Gemini client; an app wrapped in middleware has none to find.
    # It also sets the collector up, for any app.
    (tmp_path / "wrapped.py").write_text("import gc, json\nfrom wsgi import app as inner\n\n"
                                         "def app(environ, start_response):\n"
                                         "    if environ['PATH_INFO'] == '/gc':\n"
                                         "        start_response('200 OK', [('Content-Type', 'application/json')])\n"
                                         "        return [json.dumps({'frozen': gc.get_freeze_count(),\n"
                                         "                            'threshold': gc.get_threshold()}).encode()]\n"
                                         "    return inner(environ, start_response)\n")
    env = {"APSARA_DATA_DIR": str(tmp_path / "data"), "gemini": "k", "GEMINI_BASE_URL": fake.url,
           "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    with gunicorn(env, workers=1, app="wrapped:app") as base:
        status, body = call("POST", base + "/api/v1/conversations/w1/messages", {"text": "hello"})
        assert status == 404  # served by the wrapped app, which answers as the app does
        status, body = call("POST", base + "/api/v1/conversations", {"id": "w1"})
        assert status == 201
        status, body = call("POST", base + "/api/v1/conversations/w1/messages", {"text": "hello"})
        assert status == 201 and body["reply"]["text"]
        # The worker's start is left out of its collections, with the collector's settings.
        status, body = call("GET", base + "/gc")
        assert status == 200 and body["frozen"] > 50_000 and body["threshold"] == [50_000, 20, 10]


def test_the_standalone_fake_keeps_only_its_last_requests():
    fake = FakeGemini(keep_requests=3).start()
    try:
        for n in range(10):
            request = urllib.request.Request(f"{fake.url}/v1beta/models/gemini-3.8-flash:generateContent",
                                             data=json.dumps({"contents": [{"role": "user", "parts": [
                                                 {"text": f"question {n}"}]}]}).encode(),
                                             headers={"Content-Type": "application/json",
                                                      "x-goog-api-key": "k"})
            urllib.request.urlopen(request, timeout=10).read()
        kept = [r["json"]["contents"][0]["parts"][0]["text"] for r in fake.requests]
        assert 3 <= len(kept) <= 6 and kept[-1] == "question 9"
        assert kept == [f"question {n}" for n in range(10 - len(kept), 10)]  # the newest, in order
    finally:
        fake.stop()
