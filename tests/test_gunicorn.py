"""The app under real Gunicorn with two worker processes: no lost updates."""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.servers import call, gunicorn

pytestmark = pytest.mark.slow

# Each concurrent PATCH sets a different key; with merging, all must survive.
SETTING_VALUES = {"temperature": 0.5, "top_p": 0.5, "top_k": 3, "max_output_tokens": 99,
                  "seed": 42, "stop_sequences": ["Z"], "thinking_level": "low", "include_thoughts": True}


def test_concurrent_patches_through_two_workers_lose_nothing(tmp_path):
    log = tmp_path / "gunicorn.log"
    # sync workers take one request at a time, so overlapping requests must spread over both processes
    with gunicorn({"APSARA_DATA_DIR": str(tmp_path / "data")}, workers=2, worker_class="sync",
                  log_path=log) as base:
        url = f"{base}/api/v1/conversations"
        assert call("POST", url, {"id": "shared"})[0] == 201
        with ThreadPoolExecutor(max_workers=16) as pool:
            for round_ in range(12):
                status, _ = call("PATCH", f"{url}/shared", {"settings": {k: None for k in SETTING_VALUES}})
                assert status == 200
                results = list(pool.map(
                    lambda item: call("PATCH", f"{url}/shared", {"settings": {item[0]: item[1]}}),
                    SETTING_VALUES.items()))
                assert all(status == 200 for status, _ in results)
                status, conversation = call("GET", f"{url}/shared")
                assert conversation["settings"] == SETTING_VALUES, f"round {round_}"
            # many concurrent creations: each exactly once
            created = list(pool.map(lambda n: call("POST", url, {"id": f"c{n % 20}"})[0], range(60)))
            assert created.count(201) == 20 and created.count(409) == 40
    from apsara.conversations.store import ConversationStore

    store = ConversationStore(tmp_path / "data")
    for path in (tmp_path / "data" / "history").rglob("*.json"):
        assert store.read(path.parent.name, path.stem) is not None  # every file parses
    pids = set(re.findall(r"pid=<?(\d+)", log.read_text()))
    assert len(pids) >= 2, "requests were served by one worker only"


def test_client_gone_mid_stream_under_gunicorn_keeps_the_reply(tmp_path, fake):
    import socket
    import time

    from apsara.testing.fake_gemini import Reply

    fake.default = Reply(parts=[f"word{n} " for n in range(8)], chunk_delay_s=0.2)
    env = {"APSARA_DATA_DIR": str(tmp_path / "data"), "gemini": "k", "GEMINI_BASE_URL": fake.url}
    with gunicorn(env, workers=1) as base:
        host, port = base.removeprefix("http://").split(":")
        call("POST", f"{base}/api/v1/conversations", {"id": "d"})
        body = json.dumps({"text": "go", "stream": True}).encode()
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /api/v1/conversations/d/messages HTTP/1.1\r\nHost: t\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            received = b""
            while b"event: delta" not in received:
                received += sock.recv(4096)
        # the client is gone after its first delta; the reply is finished and stored anyway
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            reply = call("GET", f"{base}/api/v1/conversations/d")[1]["messages"][1]
            if reply["status"] != "streaming":
                break
            time.sleep(0.1)
    assert reply["status"] == "complete"
    assert reply["text"] == "".join(f"word{n} " for n in range(8))


def test_signed_file_urls_work_on_every_worker(tmp_path):
    """Without APSARA_SECRET_KEY the key is random per start, but shared by all workers."""
    import urllib.request

    env = {"APSARA_DATA_DIR": str(tmp_path / "data")}
    with gunicorn(env, workers=2, worker_class="sync") as base:
        boundary = "b0undary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\n"
                f"hello\r\n--{boundary}--\r\n").encode()
        request = urllib.request.Request(f"{base}/api/v1/files", data=body, method="POST",
                                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        url = json.loads(urllib.request.urlopen(request).read())["url"]
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: urllib.request.urlopen(base + url).status, range(40)))
    assert codes == [200] * 40


def test_a_burst_of_streamed_turns_on_many_conversations_all_end_and_are_found(tmp_path, fake):
    # Each turn's disk work (fsync, search index) runs on native threads beside the worker's
    # greenlets; a lock shared between the two kinds once lost a wake-up here and hung turns.
    import threading
    import time
    import urllib.request

    from apsara.testing.fake_gemini import Reply

    fake.default = Reply(parts=["one ", "two ", "three"], chunk_delay_s=0.05)
    env = {"APSARA_DATA_DIR": str(tmp_path / "data"), "gemini": "k", "GEMINI_BASE_URL": fake.url}
    count = 80
    with gunicorn(env, workers=2) as base:
        for n in range(count):
            assert call("POST", f"{base}/api/v1/conversations", {"id": f"b{n}"})[0] == 201
        barrier, streams = threading.Barrier(count), {}

        def send(n):
            request = urllib.request.Request(
                f"{base}/api/v1/conversations/b{n}/messages", method="POST",
                data=json.dumps({"text": f"marker{n}word please", "stream": True}).encode(),
                headers={"Content-Type": "application/json"})
            barrier.wait(30)
            with urllib.request.urlopen(request, timeout=60) as response:
                streams[n] = response.read().decode()

        # Daemon threads and a deadline: a hung stream still sends `: ping`, so no read times out.
        threads = [threading.Thread(target=send, args=(n,), daemon=True) for n in range(count)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 90
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert len(streams) == count, f"{count - len(streams)} of {count} turns never ended"
        assert all("event: done" in stream for stream in streams.values())
        for n in (0, count // 2, count - 1):
            status, found = call("GET", f"{base}/api/v1/conversations?q=marker{n}word")
            assert status == 200 and [c["id"] for c in found["conversations"]] == [f"b{n}"]
            status, conversation = call("GET", f"{base}/api/v1/conversations/b{n}")
            assert conversation["messages"][1]["status"] == "complete"
            assert conversation["messages"][1]["text"] == "one two three"
