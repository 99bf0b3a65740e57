"""A Gemini upstream that replays answers recorded from the live API, byte for byte.

Each recording (`tests/fixtures/real-gemini/*.json`, with their sources in the
README beside them) holds one exchange with the real Gemini API. This server
answers the real google-genai SDK over real HTTP with exactly what Gemini sent:
the recorded status, content type and headers, and the recorded body bytes
(`raw_body`) where the source kept them; a stream goes out one event at a time,
each with the separator Gemini used. Recordings whose source kept only the
parsed JSON are served as that JSON.

Tests queue the recordings that answer the generate calls, in order
(`replay.push("12-...")`), and read what the service sent (`replay.requests`).
Anything the queue does not expect (another method, another model than the one
recorded, a call with nothing queued) is answered 500 and listed in
`replay.unexpected`, so a test that forgets to check still cannot pass quietly.

`models.list` answers with the recorded first page; the page after it was not
recorded, and is answered with an empty final page (`{}`), as Gemini does when a
listing ends on a page boundary.
"""
from __future__ import annotations

import codecs
import json
import re
import socket
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_CALL = re.compile(r"^/(?P<ver>v1\w*)/models/(?P<model>[^/:]+):(?P<method>\w+)$")
_MODELS = re.compile(r"^/(?P<ver>v1\w*)/models$")
MODELS_LIST = "34-models-list-page1"
# Headers the server writes itself (framing) or that were dropped when recording.
_FRAMING = {"content-type", "content-length", "transfer-encoding", "content-encoding", "date", "connection"}


def load_recordings(folder: Path) -> dict[str, dict]:
    """Every recording in `folder`, by file name without `.json`."""
    return {path.stem: json.loads(path.read_text("utf-8")) for path in sorted(Path(folder).glob("*.json"))}


def recorded_call(recording: dict) -> tuple[str | None, str | None]:
    """(model, method) of the recorded request path, None where the source did not log it."""
    match = _CALL.match((recording["request"].get("path") or "").split("?", 1)[0])
    return (match["model"], match["method"]) if match else (None, None)


def sse_events(response: dict) -> list[bytes]:
    """The recorded stream cut into its events, each keeping its own separator."""
    raw = response["raw_body"].encode("utf-8")
    separator = codecs.decode(response.get("sse_event_separator") or "\\n\\n", "unicode_escape").encode()
    pieces = raw.split(separator)
    events = [piece + separator for piece in pieces[:-1]]
    if pieces[-1]:
        events.append(pieces[-1])
    return events


def body_bytes(response: dict) -> bytes:
    if response.get("raw_body") is not None:
        return response["raw_body"].encode("utf-8")
    # Parsed by the recorder: same values, Gemini's own two-space layout.
    return json.dumps(response["body"], indent=2, ensure_ascii=False).encode("utf-8")


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class ReplayGemini:
    def __init__(self, folder: Path):
        self.recordings = load_recordings(folder)
        self.queue: deque[str] = deque()
        self.requests: list[dict] = []
        self.unexpected: list[str] = []
        self.served: list[str] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "ReplayGemini":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def push(self, *names: str) -> None:
        """Queue recordings (by name or unique prefix, e.g. "12") to answer the next generate calls."""
        for name in names:
            matches = [n for n in self.recordings if n == name or n.startswith(f"{name}-")]
            if len(matches) != 1:
                raise KeyError(f"no single recording named {name!r}")
            self.queue.append(matches[0])

    def generate_requests(self) -> list[dict]:
        return [r for r in self.requests if r["method_name"] in ("generateContent", "streamGenerateContent")]

    def _take(self, model: str, method: str) -> dict | str:
        """The next queued recording for this call, or why there is none."""
        with self._lock:
            if not self.queue:
                return f"{method} on {model} with no recording queued"
            name = self.queue[0]
            recording = self.recordings[name]
            recorded_model, recorded_method = recorded_call(recording)
            if recorded_method and recorded_method != method:
                return f"{method} on {model}, but {name} answers {recorded_method}"
            # A source that kept the request names the model it was sent to; one that
            # kept only the answer can stand for any model.
            if recording["request"].get("body") is not None and recorded_model != model:
                return f"{method} on {model}, but {name} was recorded from {recorded_model}"
            self.queue.popleft()
            self.served.append(name)
            return recording

    def _handler(self):
        replay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args):
                pass

            def _record(self, body, match=None) -> None:
                with replay._lock:
                    replay.requests.append({"method": self.command, "path": self.path, "json": body,
                                            "headers": dict(self.headers),
                                            "method_name": match["method"] if match else None,
                                            "model": match["model"] if match else None})

            def _refuse(self, why: str) -> None:
                replay.unexpected.append(why)
                data = json.dumps({"error": {"code": 500, "message": f"replay: {why}",
                                             "status": "INTERNAL"}}).encode()
                self.send_response(500)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _head(self, response: dict, length: int | None) -> None:
                self.send_response(response["status"])
                self.send_header("Content-Type", response.get("content_type") or "application/json; charset=UTF-8")
                for name, value in (response.get("headers") or {}).items():
                    if name.lower() not in _FRAMING:
                        self.send_header(name, value)
                if length is None:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(length))
                self.end_headers()

            def _serve(self, response: dict) -> None:
                if (response.get("content_type") or "").startswith("text/event-stream"):
                    self._head(response, None)
                    try:
                        for event in sse_events(response):
                            self.wfile.write(event)
                            self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                data = body_bytes(response)
                self._head(response, len(data))
                self.wfile.write(data)

            def do_GET(self):
                path, _, query = self.path.partition("?")
                self._record(None)
                if not _MODELS.match(path):
                    return self._refuse(f"GET {path} is not recorded")
                if "pageToken=" in query:
                    return self._serve({"status": 200, "content_type": "application/json; charset=UTF-8",
                                        "raw_body": "{}\n"})
                return self._serve(replay.recordings[MODELS_LIST]["response"])

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                path = self.path.split("?", 1)[0]
                match = _CALL.match(path)
                self._record(body, match)
                if not match or match["method"] not in ("generateContent", "streamGenerateContent"):
                    return self._refuse(f"POST {path} is not recorded")
                found = replay._take(match["model"], match["method"])
                if isinstance(found, str):
                    return self._refuse(found)
                return self._serve(found["response"])

        return Handler


__all__ = ["ReplayGemini", "load_recordings", "recorded_call", "sse_events", "body_bytes"]
