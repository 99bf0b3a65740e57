"""What Apsara adds on top of a direct SDK call, and how many streams it holds.

Side by side, in one run, against the same offline Gemini fake (its own process):
  1. a direct google-genai call with a 10-turn (and a 500-turn) history, vs the
     same turn sent through Apsara under Gunicorn: added p50 and p99 (paired),
     each sample on a conversation of its own; at 500 turns, also consecutive
     turns continuing one conversation, the direct history growing in step;
     and the same call made by google-genai alone in the same Gunicorn
     (bench/sdk_only.py): what hosting costs by itself;
  2. bytes written to the conversation's file per turn, compactions included,
     over a run of consecutive turns on a 10-turn and a 500-turn conversation;
  3. time to first delta, direct stream vs through Apsara;
  4. N concurrent 10-second streams, in rounds: a bare HTTP client straight to
     the fake, then through Apsara (per worker class), then through google-genai
     alone and through Flask with google-genai, in the same Gunicorn
     (bench/sdk_only.py): first-delta p99 side by side, and the median ratio;
  5. resume: the first replayed byte of a finished 2,000-event reply, asked of
     another Gunicorn server sharing the data folder;
  6. stop: from the stop request (sent to the other server) to the moment the
     fake sees the Gemini connection closed.
Run: `.venv/bin/python bench/chat.py [--streams 200] [--classes gevent,gthread]`.
"""
from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from google import genai  # noqa: E402
from google.genai import types  # noqa: E402

from apsara.clock import now_iso  # noqa: E402
from apsara.gemini.client import speed_up_sdk  # noqa: E402
from apsara.gemini import wire  # noqa: E402
from apsara.conversations.file_format import encode  # noqa: E402
from apsara.conversations.store import ConversationStore, iso_to_ns  # noqa: E402
from apsara.testing.fake_gemini import FakeGemini, Reply  # noqa: E402
from tests.servers import MASTERS, free_port, gunicorn, wait_for  # noqa: E402

MODEL = "gemini-3.8-flash"


def start_fake(chunks=0, delay=0.0):
    port = free_port()
    args = [sys.executable, "-m", "apsara.testing.fake_gemini", "--port", str(port)]
    if chunks:
        args += ["--chunks", str(chunks), "--chunk-delay", str(delay)]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
            break
        except OSError:
            time.sleep(0.05)
    return process, f"http://127.0.0.1:{port}"


def history(turns: int) -> list[tuple[str, str]]:
    out = []
    for n in range(turns):
        out.append(("user", f"question {n} " + "lorem ipsum " * 20))
        out.append(("model", f"answer {n} " + "dolor sit amet " * 30))
    return out


def seed(data: Path, conversation_id: str, turns: int) -> None:
    folder = data / "history" / "local"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = now_iso()
    messages, active, parent = [], {}, None
    for n, (role, text) in enumerate(history(turns)):
        message = {"id": f"m{n}", "role": role, "parent_id": parent, "created_at": stamp,
                   "parts": [{"type": "text", "text": text}]}
        if role == "model":
            message.update(status="complete", model=MODEL)
        messages.append(message)
        active[parent or ""] = message["id"]
        parent = message["id"]
    header = {"id": conversation_id, "title": "", "created_at": stamp, "updated_at": stamp, "model": MODEL,
              "system_instruction": "", "tools": [], "settings": {}, "message_count": len(messages)}
    path = folder / f"{conversation_id}.json"
    path.write_bytes(encode({"conversation": header, "messages": messages, "active": active}))
    os.utime(path, ns=(iso_to_ns(stamp),) * 2)


def index_seeded(data: Path) -> None:
    """Index what seed() wrote straight to disk, here and now. Left to the workers, their start
    mended the index (~3 s for 100 conversations of 500 turns) and SQLite then copied that back
    from its log on a thread of theirs, in the middle of the first measurements."""
    ConversationStore(data).check_search_index()


def direct_contents(turns: int) -> list[dict]:
    """The fastest way to hand the SDK a history (dicts: it validates them once)."""
    contents = [{"role": r, "parts": [{"text": t}]} for r, t in history(turns)]
    return contents + [{"role": "user", "parts": [{"text": "next question"}]}]


def pct(samples, q):
    samples = sorted(samples)
    return samples[min(len(samples) - 1, int(len(samples) * q))]


def post(conn, path, body, stream=False):
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    return conn.getresponse()


def first_delta_via_apsara(conn, path) -> tuple[float, float]:
    start = time.perf_counter()
    response = post(conn, path, {"text": "next question", "stream": True})
    first = None
    buffer = b""
    while True:
        line = response.readline()
        if not line:
            break
        if first is None and line.startswith(b"event: delta"):
            first = time.perf_counter() - start
        buffer += line
    return first, time.perf_counter() - start


def warm(base: str, data: Path, turns: int = 8) -> None:
    """A few turns first, on conversations of their own, so that both workers have
    their Gemini client, model list and first requests behind them, as the direct
    client's process has its imports: steady state on both sides of the pairs."""
    host, port = base.removeprefix("http://").split(":")
    for n in range(turns):
        seed(data, f"warm-{n}", 10)
        conn = http.client.HTTPConnection(host, int(port))  # a new connection: either worker
        for text, stream in (("warm up", False), ("and again", True)):
            response = post(conn, f"/api/v1/conversations/warm-{n}/messages", {"text": text, "stream": stream})
            response.read()
        conn.close()


SDK_ONLY = "bench.sdk_only:app"  # google-genai alone in the same Gunicorn: the floor under Apsara's figures
FLASK_SDK = "bench.sdk_only:flask_app"  # the same on Flask: the floor of the stack Apsara is built on


def warm_sdk_only(base: str) -> None:
    for _ in range(8):  # new connections: either worker
        conn = connect(base)
        for path in ("/turn?turns=10", "/turn?turns=500"):
            post(conn, path, {}).read()
        conn.close()


def own_times(log: Path, offset: int) -> list[float]:
    """Per turn logged since `offset`: the worker's request time minus its Gemini call time."""
    text = log.read_bytes()[offset:].decode(errors="replace")
    return [float(d) - float(g) for d, g in re.findall(r"duration_ms=([\d.]+).*?gemini_ms=([\d.]+)", text)]


def connect(base: str) -> http.client.HTTPConnection:
    host, port = base.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port))


def timed_turn(conn, path: str) -> float:
    start = time.perf_counter()
    response = post(conn, path, {"text": "next question"})
    response.read()
    assert response.status == 201, response.status
    return (time.perf_counter() - start) * 1000


def direct_call_section(fake_url: str, samples: int, label: str) -> None:
    """The direct call alone, with the SDK's own request building and then with the
    faster one Apsara's workers use (apsara.gemini.client.speed_up_sdk): what it saves a
    long conversation's every turn, Apsara's or a direct one. The pairs below give both
    sides the faster one, so that they differ only by Apsara. Beside each, the same call
    with the history handed over as Gemini's JSON, each message's made once
    (apsara.gemini.wire), as Apsara's workers send theirs: the direct calls of the pairs
    below do not, so Apsara's turn gains that against them."""
    client = genai.Client(api_key="bench", http_options=types.HttpOptions(base_url=fake_url, api_version="v1beta",
                                                                          timeout=60_000))
    for turns in (10, 500):
        contents, times, handed_over = direct_contents(turns), [], []
        kept = [wire.ContentDict(content) for content in contents]  # as a conversation's are
        for _ in range(samples):
            start = time.perf_counter()
            client.models.generate_content(model=MODEL, contents=contents)
            times.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            newest, config = wire.request(kept, None)  # from the second call on, each message's JSON is kept
            client.models.generate_content(model=MODEL, contents=newest, config=config)
            handed_over.append((time.perf_counter() - start) * 1000)
        print(f"{turns:>4}-turn direct call, {label}: p50 {statistics.median(times):6.2f} ms; "
              f"with the history handed over as JSON made once, as Apsara's workers send it: "
              f"p50 {statistics.median(handed_over):6.2f} ms")


def latency_section(base: str, floor_base: str, fake_url: str, turns: int, samples: int, log: Path) -> None:
    client = genai.Client(api_key="bench", http_options=types.HttpOptions(base_url=fake_url, api_version="v1beta",
                                                                          timeout=60_000))
    contents = direct_contents(turns)
    conn, floor_conn = connect(base), connect(floor_base)
    direct, through, floor = [], [], []
    offset = log.stat().st_size
    for n in range(samples):  # interleaved, so all three see the same machine state
        start = time.perf_counter()
        client.models.generate_content(model=MODEL, contents=contents)
        direct.append((time.perf_counter() - start) * 1000)
        through.append(timed_turn(conn, f"/api/v1/conversations/t{turns}-{n}/messages"))
        floor.append(timed_turn(floor_conn, f"/turn?turns={turns}"))
    d50, a50 = statistics.median(direct), statistics.median(through)
    # Pairs were taken back to back: the median of their differences shrugs off machine noise.
    paired = [t - d for t, d in zip(through, direct)]
    added, added99 = statistics.median(paired), pct(paired, .99)
    target50, target99 = (6, 30) if turns <= 10 else (8, None)
    verdict = "met" if added <= target50 and (target99 is None or added99 <= target99) else "MISSED"
    print(f"{turns:>4}-turn turn, a conversation each (read by the worker for the first time): direct p50 {d50:6.2f} ms | via Apsara p50 {a50:6.2f} ms p99 {pct(through, .99):6.2f} ms"
          f" | added (paired): p50 {added:6.2f} ms p99 {added99:6.2f} ms"
          f" (target p50 <= {target50}{f', p99 <= {target99}' if target99 else ''}: {verdict})")
    # What any SDK call served by a Gunicorn worker costs over the same call made in-process.
    hosted = statistics.median(f - d for f, d in zip(floor, direct))
    print(f"{'':>15}the same call made by google-genai alone in a Gunicorn worker behind HTTP: added (paired) "
          f"p50 {hosted:6.2f} ms; Apsara over that: p50 {statistics.median(t - f for t, f in zip(through, floor)):6.2f} ms")
    # The same from inside, free of the client's noise: what the worker spent beside Gemini.
    own = own_times(log, offset)
    if own:
        print(f"{'':>15}Apsara's own time in the worker (request time minus its Gemini call): "
              f"p50 {statistics.median(own):6.2f} ms p99 {pct(own, .99):6.2f} ms over {len(own)} turns")


def consecutive_section(base: str, fake_url: str, conversation_id: str, turns: int, samples: int,
                        log: Path) -> None:
    """The same pairs as a user continuing one conversation makes them: consecutive turns on
    `conversation_id`, the direct call's history growing in step with Apsara's (its reply
    and the next question). One connection: the worker serving it read the conversation
    once, and each turn after that reads only the records appended since."""
    client = genai.Client(api_key="bench", http_options=types.HttpOptions(base_url=fake_url, api_version="v1beta",
                                                                          timeout=60_000))
    contents = direct_contents(turns)
    conn = connect(base)
    direct, through = [], []
    offset = log.stat().st_size
    for _ in range(samples):
        start = time.perf_counter()
        client.models.generate_content(model=MODEL, contents=contents)
        direct.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        response = post(conn, f"/api/v1/conversations/{conversation_id}/messages", {"text": "next question"})
        raw = response.read()
        through.append((time.perf_counter() - start) * 1000)
        assert response.status == 201, (response.status, raw[:300])
        body = json.loads(raw)
        contents = contents + [{"role": "model", "parts": [{"text": body["reply"]["text"]}]},
                               {"role": "user", "parts": [{"text": "next question"}]}]
    paired = [t - d for t, d in zip(through, direct)]
    added, target = statistics.median(paired), 8
    print(f"{turns:>4}-turn conversation continued, {samples} consecutive turns: direct p50 "
          f"{statistics.median(direct):6.2f} ms | via Apsara p50 {statistics.median(through):6.2f} ms"
          f" | added (paired): p50 {added:6.2f} ms p99 {pct(paired, .99):6.2f} ms"
          f" (target p50 <= {target}: {'met' if added <= target else 'MISSED'})")
    own = own_times(log, offset)
    if own:
        print(f"{'':>15}Apsara's own time in the worker: p50 {statistics.median(own):6.2f} ms "
              f"p99 {pct(own, .99):6.2f} ms over {len(own)} turns")


def bytes_section(base: str, data: Path, conversation_id: str, turns: int) -> None:
    """Consecutive turns on one conversation: bytes appended, plus whole rewrites (compactions)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port))
    path = data / "history" / "local" / f"{conversation_id}.json"
    written, rewrites, times = 0, 0, []
    stat = path.stat()
    for n in range(turns):
        start = time.perf_counter()
        response = post(conn, f"/api/v1/conversations/{conversation_id}/messages", {"text": f"next question {n}"})
        response.read()
        times.append((time.perf_counter() - start) * 1000)
        assert response.status == 201, response.status
        now = path.stat()
        if now.st_ino != stat.st_ino:  # compacted: the whole snapshot was written again
            written += now.st_size
            rewrites += 1
        else:
            written += now.st_size - stat.st_size
        stat = now
    print(f"bytes written per turn, {conversation_id}: {written / turns:8.0f} B over {turns} consecutive turns "
          f"({rewrites} compactions included; file now {stat.st_size / 1024:.0f} KB); turn p50 "
          f"{statistics.median(times):.2f} ms p99 {pct(times, .99):.2f} ms")


def first_delta_section(base: str, fake_url: str, data: Path, samples: int) -> None:
    client = genai.Client(api_key="bench", http_options=types.HttpOptions(base_url=fake_url, api_version="v1beta",
                                                                          timeout=60_000))
    contents = direct_contents(10)
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port))
    direct, through = [], []
    for n in range(samples):
        start = time.perf_counter()
        stream = client.models.generate_content_stream(model=MODEL, contents=contents)
        next(iter(stream))
        direct.append((time.perf_counter() - start) * 1000)
        for _ in stream:
            pass
        first, _ = first_delta_via_apsara(conn, f"/api/v1/conversations/s-{n}/messages")
        through.append(first * 1000)
    d50, a50 = statistics.median(direct), statistics.median(through)
    added = statistics.median(t - d for t, d in zip(through, direct))
    print(f"time to first delta: direct p50 {d50:6.2f} ms | via Apsara p50 {a50:6.2f} ms | added: p50 difference "
          f"{a50 - d50:6.2f} ms, median paired {added:6.2f} ms (target <= 6: {'met' if added <= 6 else 'MISSED'})")


def bare_first_chunks(fake_url: str, streams: int, seconds: float) -> tuple[list[float], list]:
    """A bare HTTP client straight to the fake: `streams` streams at once, time to first chunk."""
    host, port = fake_url.removeprefix("http://").split(":")
    body = json.dumps({"contents": direct_contents(1)})
    firsts, errors, lock = [], [], threading.Lock()
    barrier = threading.Barrier(streams)

    def one(n):
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=seconds * 6)
            barrier.wait(30)
            start = time.perf_counter()
            conn.request("POST", f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", body=body,
                         headers={"Content-Type": "application/json", "x-goog-api-key": "bench"})
            response = conn.getresponse()
            first = None
            while line := response.readline():
                if first is None and line.startswith(b"data: "):
                    first = time.perf_counter() - start
            with lock:
                (firsts if first is not None else errors).append(first if first is not None else n)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            with lock:
                errors.append(f"{n}: {type(exc).__name__}")

    threads = [threading.Thread(target=one, args=(n,)) for n in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return firsts, errors


def burst(bases: list[str], prefix: str, streams: int, seconds: float, path: str | None = None):
    """`streams` streamed turns started at one instant on conversations `<prefix><n>` (or all to
    `path`), spread over the servers in `bases`: (completed, errors, first-delta times, stream
    times, wall s)."""
    ok, errors, firsts, totals = [], [], [], []
    lock, barrier = threading.Lock(), threading.Barrier(streams)

    def one(n):
        try:
            host, port = bases[n % len(bases)].removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=seconds * 6)
            barrier.wait(30)
            first, total = first_delta_via_apsara(conn, path or f"/api/v1/conversations/{prefix}{n}/messages")
            with lock:
                (ok if first is not None else errors).append(n)
                if first is not None:
                    firsts.append(first)
                    totals.append(total)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            with lock:
                errors.append(f"{n}: {type(exc).__name__}")

    threads = [threading.Thread(target=one, args=(n,)) for n in range(streams)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ok, errors, firsts, totals, time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settled(workers: list[int], quiet_s: float = 0.3, timeout_s: float = 30.0) -> None:
    """Until every worker has booted and sits idle (no CPU used for `quiet_s`): the start-up
    check answered once one worker was up, and the other may still be importing the app,
    which would leave the start of a burst to one worker."""
    deadline = time.monotonic() + timeout_s
    before = [cpu_seconds(pid) for pid in workers]
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = [cpu_seconds(pid) for pid in workers]
        if now == before:
            return
        before = now


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


class CpuWatch:
    """CPU used by each party of a burst, sampled every 10 ms, so that what each had used by
    a given moment (the burst's first-delta p99) can be told afterwards."""

    def __init__(self, parties: dict[str, list[int]]):
        self.parties = parties
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _now(self) -> dict[str, float]:
        used = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self.parties.items()}
        used["bench client"] = time.process_time()
        return used

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self._now()))
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def used_by(self, moment: float) -> dict[str, float]:
        start = self.samples[0][1]
        at = min(self.samples, key=lambda sample: abs(sample[0] - moment))[1]
        return {name: at[name] - start[name] for name in start}


def print_cpu(watch: CpuWatch, started: float, p99: float, streams: int) -> None:
    """What the machine's cores did until the burst's first-delta p99."""
    used = watch.used_by(started + p99)
    print(f"{'':>10}CPU used by then ({os.cpu_count()} cores, {p99:.2f} s): " + ", ".join(
        f"{name} {seconds_used:.2f} s = {seconds_used / streams * 1000:.1f} ms a stream"
        for name, seconds_used in used.items()))


def floor_burst(label: str, app: str, env: dict, worker_class: str, fake, streams: int, seconds: float,
                bare_p99: float) -> float:
    """The same burst through a floor app (bench/sdk_only.py) in the same Gunicorn; its p99 ratio."""
    with gunicorn(env, workers=2, worker_class=worker_class, app=app) as base:
        warm_sdk_only(base)
        workers = children(MASTERS[base])
        settled(workers)
        with CpuWatch({f"{label} workers": workers, "fake Gemini": [fake.pid]}) as watch:
            started = time.perf_counter()
            _, errors, firsts, _, _ = burst([base], "", streams, seconds, path="/stream")
    if not firsts:
        print(f"{label:>10}: no stream answered; first errors: {errors[:5]}")
        return float("nan")
    p99 = pct(firsts, .99)
    print(f"{label:>10}: {len(errors)} errors; first delta p50 {statistics.median(firsts) * 1000:.0f} ms "
          f"p99 {p99 * 1000:.0f} ms = {p99 / bare_p99:.2f}x the bare client's p99")
    print_cpu(watch, started, p99, streams)
    return p99 / bare_p99


def concurrency_section(worker_class: str, streams: int, seconds: float, rounds: int) -> None:
    """Rounds of: the bare client, Apsara, then two floors (google-genai alone, and Flask with
    google-genai) in the same Gunicorn, each the same burst. The floors do no storage, no
    planning, no checks: what the stack Apsara is built on costs by itself under the burst."""
    chunks = 20
    fake, fake_url = start_fake(chunks=chunks, delay=seconds / (chunks - 1))
    ratios: dict[str, list[float]] = {"Apsara": [], "SDK only": [], "Flask+SDK": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        for n in range(streams):
            seed(data, f"c{n}", 1)
        index_seeded(data)
        env = {"APSARA_DATA_DIR": str(data), "gemini": "bench", "GEMINI_BASE_URL": fake_url,
               "GUNICORN_ACCESS_LOG": "/dev/null", "GUNICORN_THREADS": str(max(streams // 2 + 10, 50))}
        for round_number in range(1, rounds + 1):
            print(f"  {worker_class}, round {round_number} of {rounds}:")
            with CpuWatch({"fake Gemini": [fake.pid]}) as watch:
                started = time.perf_counter()
                bare, bare_errors = bare_first_chunks(fake_url, streams, seconds)
            bare_p99 = pct(bare, .99)
            print(f"{'bare':>10}: {streams} concurrent {seconds:.0f}-second streams straight to the fake: "
                  f"{len(bare_errors)} errors; first chunk p50 {statistics.median(bare) * 1000:.0f} ms "
                  f"p99 {bare_p99 * 1000:.0f} ms")
            print_cpu(watch, started, bare_p99, streams)
            ratios["Apsara"].append(apsara_burst(env, data, worker_class, fake, streams, seconds, bare_p99))
            ratios["SDK only"].append(floor_burst("SDK only", SDK_ONLY, env, worker_class, fake, streams, seconds,
                                                  bare_p99))
            ratios["Flask+SDK"].append(floor_burst("Flask+SDK", FLASK_SDK, env, worker_class, fake, streams,
                                                   seconds, bare_p99))
    fake.terminate()
    fake.wait()
    print(f"{worker_class:>8}: {streams} concurrent streams, first-delta p99 over the bare client's, median of "
          f"{rounds} rounds: " + ", ".join(f"{name} {statistics.median(r):.2f}x" for name, r in ratios.items())
          + f" (target <= 2x: {'met' if statistics.median(ratios['Apsara']) <= 2 else 'MISSED'})")


def apsara_burst(env: dict, data: Path, worker_class: str, fake, streams: int, seconds: float,
                 bare_p99: float) -> float:
    """The burst through Apsara, one streamed turn on each of `streams` conversations; its p99 ratio."""
    with gunicorn(env, workers=2, worker_class=worker_class) as base:
        host, port = base.removeprefix("http://").split(":")
        # Warm both workers (their Gemini client, the model list) as a bare client needs no warming.
        for n in range(8):
            conn = http.client.HTTPConnection(host, int(port))
            conn.request("GET", "/api/v1/models")
            conn.getresponse().read()
            conn.close()
        workers = children(MASTERS[base])
        settled(workers)
        with CpuWatch({"Apsara's workers": workers, "fake Gemini": [fake.pid]}) as watch:
            started = time.perf_counter()
            ok, errors, firsts, totals, wall = burst([base], "c", streams, seconds)
    store = ConversationStore(data)
    stored_ok = sum(store.read("local", f"c{n}")["messages"][-1].get("status") == "complete"
                    for n in range(streams))
    p99 = pct(firsts, .99) if firsts else float("nan")
    ratio = p99 / bare_p99
    print(f"{'Apsara':>10}: {len(ok)} completed, {len(errors)} errors, {stored_ok} replies stored complete; "
          f"first delta p50 {statistics.median(firsts) * 1000 if firsts else float('nan'):.0f} ms p99 "
          f"{p99 * 1000:.0f} ms = {ratio:.2f}x the bare client's p99 (target <= 2x, 0 errors: "
          f"{'met' if ratio <= 2 and not errors else 'MISSED'}); stream p99 "
          f"{pct(totals, .99) if totals else float('nan'):.2f} s; wall {wall:.1f} s")
    if firsts:
        print_cpu(watch, started, p99, streams)
    if errors:
        print("          first errors:", errors[:5])
    return ratio


def read_first_event(base: str, path: str, headers=None) -> float:
    """Seconds from sending the request to the first event's first byte."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    start = time.perf_counter()
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    while line := response.readline():
        if line.startswith(b"event: "):
            first = time.perf_counter() - start
            break
    response.read()
    conn.close()
    return first


def resume_and_stop_sections(samples: int, database_url: str | None = None) -> None:
    """Through two servers: on one data folder, or (`database_url`) as replicas on one database."""
    fake = FakeGemini().start()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"APSARA_DATA_DIR": str(Path(tmp) / "data"), "gemini": "bench", "GEMINI_BASE_URL": fake.url,
               "GUNICORN_ACCESS_LOG": "/dev/null"}
        other = env
        if database_url:  # replicas share nothing on disk
            env["APSARA_DATABASE_URL"] = database_url
            other = {**env, "APSARA_DATA_DIR": str(Path(tmp) / "other")}
        with gunicorn(env, workers=1) as first, gunicorn(other, workers=1) as second:
            host, port = first.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port))
            post(conn, "/api/v1/conversations", {"id": "long"}).read()
            fake.default = Reply(parts=[f"w{n} " for n in range(2000)])
            response = post(conn, "/api/v1/conversations/long/messages", {"text": "go", "stream": True})
            raw = response.read()
            reply_id = json.loads(raw.split(b"event: reply_start\n", 1)[1].split(b"data: ", 1)[1].split(b"\n", 1)[0])["id"]
            events = raw.count(b"\nid: ") + raw.startswith(b"event")
            path = f"/api/v1/conversations/long/messages/{reply_id}/events"
            times = [read_first_event(second, path) * 1000 for _ in range(samples)]
            print(f"resume: {events}-event reply, replayed by the other server: first event p50 "
                  f"{statistics.median(times):.1f} ms p99 {pct(times, .99):.1f} ms "
                  f"(target p50 <= 50: {'met' if statistics.median(times) <= 50 else 'MISSED'})")
            # stop: from the request to the moment Gemini's connection is closed
            latencies = []
            for n in range(samples // 2):
                gate = threading.Event()
                fake.default = None
                fake.push(Reply(parts=["first", " never"], hold=gate))
                post(conn, "/api/v1/conversations", {"id": f"stop{n}"}).read()
                stream = post(conn, f"/api/v1/conversations/stop{n}/messages", {"text": "go", "stream": True})
                seen = b""
                while b"event: delta" not in seen:
                    seen += stream.readline()
                rid = json.loads(seen.split(b"event: reply_start\n", 1)[1].split(b"data: ", 1)[1].split(b"\n", 1)[0])["id"]
                closed_before = len(fake.closed_streams)
                other = http.client.HTTPConnection(*second.removeprefix("http://").split(":"))
                start = time.monotonic()
                other.request("POST", f"/api/v1/conversations/stop{n}/messages/{rid}/stop")
                assert other.getresponse().status == 200
                while len(fake.closed_streams) == closed_before and time.monotonic() - start < 5:
                    time.sleep(0.001)
                latencies.append(((fake.closed_streams[-1] if len(fake.closed_streams) > closed_before
                                   else time.monotonic()) - start) * 1000)
                stream.read()
                gate.set()
                other.close()
            print(f"stop: request (to the other server) -> Gemini connection closed: p50 "
                  f"{statistics.median(latencies):.0f} ms p99 {pct(latencies, .99):.0f} ms "
                  f"(target p99 <= 1000: {'met' if pct(latencies, .99) <= 1000 else 'MISSED'})")
    fake.stop()


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    # The workers' collector settings (gunicorn.conf.py) here too: the SDK's own work on a
    # long history is cheaper with them, and the pairs must differ only by Apsara's work.
    gc.set_threshold(50_000, 20, 10)
    gc.collect()
    gc.freeze()  # and, as a worker does once started, what the imports made is left out
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--classes", default="gevent")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the concurrent-streams burst")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--turns", type=int, default=250, help="consecutive turns for the bytes-per-turn runs")
    parser.add_argument("--latency-class", default="gevent", help="worker class for the latency runs")
    parser.add_argument("--only", default="latency,bytes,first,resume,streams",
                        help="the sections to run, comma-separated")
    args = parser.parse_args()
    only = set(args.only.split(","))

    fake, fake_url = start_fake()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        for n in range(args.samples):
            seed(data, f"t10-{n}", 10)
            seed(data, f"s-{n}", 10)
        for n in range(args.samples // 2):
            seed(data, f"t500-{n}", 500)
        seed(data, "c500", 500)
        seed(data, "b10", 10)
        seed(data, "b500", 500)
        index_seeded(data)
        env = {"APSARA_DATA_DIR": str(data), "gemini": "bench", "GEMINI_BASE_URL": fake_url,
               "GUNICORN_ACCESS_LOG": "/dev/null", "LOG_LEVEL": "info"}
        log = Path(tmp) / "server.log"
        with gunicorn(env, workers=2, worker_class=args.latency_class, log_path=log) as base, \
                gunicorn(env, workers=2, worker_class=args.latency_class, app=SDK_ONLY) as floor_base:
            wait_for(base + "/health/live")
            warm(base, data)
            warm_sdk_only(floor_base)
            print(f"Gunicorn {args.latency_class}, 2 workers, {os.cpu_count()} cores; fake Gemini in its own process")
            if "latency" in only:
                direct_call_section(fake_url, 20, "the SDK's own request building")
            speed_up_sdk()  # as Apsara's workers do: the direct calls must differ only by Apsara
            if "latency" in only:
                direct_call_section(fake_url, 20, "the faster request building both sides use below")
                latency_section(base, floor_base, fake_url, 10, args.samples, log)
                latency_section(base, floor_base, fake_url, 500, args.samples // 2, log)
                consecutive_section(base, fake_url, "c500", 500, args.samples // 2, log)
            if "bytes" in only:
                bytes_section(base, data, "b10", args.turns)
                bytes_section(base, data, "b500", args.turns)
            if "first" in only:
                first_delta_section(base, fake_url, data, args.samples)
    fake.terminate()
    fake.wait()
    if "resume" in only:
        resume_and_stop_sections(args.samples // 4)
    for worker_class in filter(None, args.classes.split(",")) if "streams" in only else ():
        concurrency_section(worker_class, args.streams, args.seconds, args.rounds)


if __name__ == "__main__":
    main()
