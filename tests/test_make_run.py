"""`make run` as a newcomer meets it: no key, the offline fake, the default relative data folder."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.servers import ROOT, call, free_port, wait_for
from tests.test_files import png_bytes

pytestmark = pytest.mark.slow


@pytest.fixture
def make_run(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("gemini", "GEMINI_API_KEY", "GOOGLE_API_KEY", "GEMINI_BASE_URL", "APSARA_SECRET_KEY")}
    # A relative data folder, as the default `data` is, but under this test's folder.
    env.update({"GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1", "LOG_LEVEL": "warning",
                "APSARA_DATA_DIR": os.path.relpath(tmp_path / "data", ROOT)})
    log = open(tmp_path / "make-run.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "apsara.devserver"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(base + "/health/live", timeout=30)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _upload(base: str, data: bytes, name: str) -> dict:
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\n"
            .encode() + data + f"\r\n--{boundary}--\r\n".encode())
    request = urllib.request.Request(f"{base}/api/v1/files", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def test_a_newcomers_first_hour(make_run, tmp_path):
    base = make_run
    status, health = call("GET", f"{base}/health")
    assert status == 200 and health["gemini"] == "fake" and health["status"] == "ok"

    picture = png_bytes() + os.urandom(4000)
    meta = _upload(base, picture, "photo.png")
    with urllib.request.urlopen(base + meta["url"]) as response:  # downloads work from the relative folder
        assert response.status == 200 and response.read() == picture
    assert (tmp_path / "data" / "files").is_dir()

    assert call("POST", f"{base}/api/v1/conversations", {"id": "first"})[0] == 201
    status, turn = call("POST", f"{base}/api/v1/conversations/first/messages",
                        {"text": "What is in this picture?", "files": [meta["id"]]})
    assert status == 201, turn  # the offline fake reads the SDK's URL-safe base64
    assert turn["reply"]["status"] == "complete"

    with urllib.request.urlopen(f"{base}/") as home:  # the playground, which links to the docs
        assert home.status == 200 and b'href="/api/v1/docs"' in home.read()
