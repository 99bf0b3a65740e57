"""A local fake of the Gemini REST API, spoken at the wire level.

Real HTTP on a loopback port, the same JSON (camelCase, with the snake_case
nested objects the SDK sends), and real SSE framing (`data: <json>` + blank
line, no terminator), so the real google-genai SDK talks to it unchanged.
Tests script it (`fake.push(Reply(...))`) and read what it received
(`fake.requests`) and what it billed (`fake.billed`: per answered call, the last
usage it sent; a stream reports a running total on every chunk, as Gemini does,
and stops, billing no more, when its client has gone); with nothing scripted it
answers by echoing the user, which is what `make run` uses when there is no key.

Run alone: `python -m apsara.testing.fake_gemini --port 8765`.

Like Gemini, it signs the parts it sends (`thoughtSignature`) and, for Gemini 3
models, refuses a function-call turn whose signature was dropped or altered.
"""
from __future__ import annotations

import argparse
import base64
import gc
import json
import re
import select
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..gemini.catalog import BUNDLED
from ..gemini.titles import INSTRUCTION as TITLE_INSTRUCTION

_CALL = re.compile(r"^/(?P<ver>v1\w*)/models/(?P<model>[^/:]+):(?P<method>\w+)$")
_MODELS = re.compile(r"^/(?P<ver>v1\w*)/models(?:/(?P<model>[^/:]+))?$")
BAD_KEY = "rejected-key"
TITLE_REQUEST = TITLE_INSTRUCTION[:30]


def _readable(sock, seconds: float) -> bool:
    """poll(), not select(): a test process may hold more than 1,024 descriptors."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(seconds * 1000))


def is_title_request(body: dict) -> bool:
    return _system_text(body).startswith(TITLE_REQUEST)
FILE_LIFETIME_S = 48 * 3600  # Gemini keeps an uploaded file 48 hours
CACHE_TTL_S = 3600  # and a cache one hour unless asked otherwise


@dataclass
class Reply:
    """One scripted answer to a generate call.

    `parts` are Gemini response parts (`{"text": ...}`, `{"text":..,"thought":True}`,
    `{"inlineData": ...}`, ...), a plain string meaning a text part; a stream sends
    one part per chunk. `error` answers (status, message) instead; `fail_after`
    breaks a stream with a mid-stream error event after that many chunks.
    """

    parts: list = field(default_factory=lambda: ["Hello", " from", " the fake."])
    finish_reason: str | None = "STOP"
    usage: dict | None = None
    error: tuple[int, str] | None = None
    error_status: str | None = None
    retry_after: str | None = None
    fail_after: int | None = None
    delay_s: float = 0.0          # before the first byte of the answer
    chunk_delay_s: float = 0.0    # between stream chunks
    block_reason: str | None = None  # promptFeedback.blockReason, no candidates
    grounding: dict | None = None
    safety_ratings: list | None = None
    extra_candidate: dict | None = None
    hold: threading.Event | None = None  # a stream waits here after its first chunk
    sign: bool = True  # False: send the parts' own thoughtSignature fields, adding none

    def wire_parts(self) -> list[dict]:
        return [{"text": p} if isinstance(p, str) else p for p in self.parts]


_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
           500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def _rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ttl_s(body: dict) -> float:
    """A cache's requested lifetime: `ttl` is "300s" on the wire."""
    ttl = str(body.get("ttl") or "")
    return float(ttl[:-1]) if ttl.endswith("s") and ttl[:-1].replace(".", "", 1).isdigit() else CACHE_TTL_S


def _system_text(body: dict) -> str:
    system = body.get("systemInstruction") or body.get("system_instruction") or {}
    return "".join(p.get("text", "") for p in system.get("parts", ()) if isinstance(p, dict))


def _contents_text(body: dict) -> str:
    """The last user turn's text, for the echo reply."""
    for content in reversed(body.get("contents") or []):
        if content.get("role", "user") == "user":
            texts = [p.get("text", "") for p in content.get("parts", []) if "text" in p]
            if texts:
                return " ".join(texts)
    return ""


def _config(body: dict) -> dict:
    return body.get("generationConfig") or body.get("generation_config") or {}


def _thinking(body: dict) -> dict:
    config = _config(body)
    return config.get("thinkingConfig") or config.get("thinking_config") or {}


def inline_bytes(data: str) -> bytes:
    """Base64 as Gemini takes it: the SDK sends the URL-safe alphabet (`-`, `_`), others the standard one."""
    data = data.replace("+", "-").replace("/", "_")
    return base64.b64decode(data + "=" * (-len(data) % 4), altchars=b"-_", validate=True)


def _part_tokens(part: dict, files: dict) -> int:
    """Words of text; a text file's words (inline or uploaded); 258 for any other file."""
    if "text" in part:
        return len(str(part["text"]).split())
    inline = part.get("inlineData") or part.get("inline_data")
    data = part.get("fileData") or part.get("file_data")
    mime = ""
    raw = None
    if inline:
        mime = inline.get("mimeType") or inline.get("mime_type") or ""
        raw = inline_bytes(inline.get("data") or "")
    elif data:
        uri = data.get("fileUri") or data.get("file_uri") or ""
        record = files.get("files/" + uri.rsplit("/files/", 1)[-1])
        mime = (data.get("mimeType") or data.get("mime_type") or "")
        raw = record["bytes"] if record else None
    else:
        return 0
    if raw is not None and mime.startswith("text/"):
        return len(raw.decode("utf-8", "replace").split())
    return 258


def _count_tokens(body: dict, files: dict | None = None) -> int:
    files = files or {}
    total = 0
    for content in body.get("contents") or []:
        total += sum(_part_tokens(part, files) for part in content.get("parts", []))
    system = body.get("systemInstruction") or body.get("system_instruction") or {}
    total += sum(_part_tokens(part, files) for part in system.get("parts", []))
    return total


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # hundreds of streams may connect at once
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that gave up (a timeout test) is expected, not an error worth a traceback.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class FakeGemini:
    def __init__(self, models: list[dict] | None = None, port: int = 0,
                 clock: Callable[[], float] = time.time, keep_requests: int | None = None):
        # Every time the fake writes is relative to this clock, as Gemini's are to its own.
        self.clock = clock
        self.requests: list[dict] = []
        # Run alone, the fake keeps only the last requests it received: every one held
        # makes its collector's full passes longer (a 1,000-message history is ~50,000
        # objects), which showed as 50-100 ms stalls of its answers in the benches.
        self.keep_requests = keep_requests
        self.script: deque[Reply] = deque()
        self.default: Reply | None = None  # None: echo the user
        self.models = models if models is not None else [
            {"name": f"models/{m.id}", "displayName": m.display_name, "description": m.description,
             "inputTokenLimit": m.input_token_limit, "outputTokenLimit": m.output_token_limit,
             "supportedGenerationMethods": ["generateContent", "countTokens"],
             "thinking": m.thinking is not None}
            for m in BUNDLED]
        self.list_error: tuple[int, str] | None = None
        self.issued_signatures: set[str] = set()  # what a Gemini 3 model accepts back on its calls
        # Files API: name ("files/abc") -> {"bytes", "mime_type", "expired"}; sessions in progress.
        self.files: dict[str, dict] = {}
        self._sessions: dict[str, dict] = {}
        # Explicit caches: name -> {"model", "tokens", "expired", "body"}
        self.caches: dict[str, dict] = {}
        self.signature_counter = 0
        # time.monotonic() of each stream whose client closed it before the end (a stopped reply)
        self.closed_streams: list[float] = []
        # One entry per answered generate call: {"model", "usage"} with the last usage sent.
        self.billed: list[dict] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    # -- control ----------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeGemini":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def push(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def generate_requests(self) -> list[dict]:
        return [r for r in self.requests if r["method_name"] in ("generateContent", "streamGenerateContent")
                and not is_title_request(r.get("json") or {})]

    def title_requests(self) -> list[dict]:
        """The automatic-title calls (left out of generate_requests: they run beside the replies)."""
        return [r for r in self.requests if r["method_name"] == "generateContent"
                and is_title_request(r.get("json") or {})]

    def last_body(self) -> dict:
        return self.generate_requests()[-1]["json"]

    def billed_totals(self) -> dict:
        """What the fake billed, summed, in the API's token field names."""
        with self._lock:
            entries = list(self.billed)
        totals = {"calls": len(entries), "prompt_tokens": 0, "output_tokens": 0, "thought_tokens": 0,
                  "cached_tokens": 0, "total_tokens": 0}
        for entry in entries:
            usage = entry["usage"]
            totals["prompt_tokens"] += usage.get("promptTokenCount", 0)
            totals["output_tokens"] += usage.get("candidatesTokenCount", 0)
            totals["thought_tokens"] += usage.get("thoughtsTokenCount", 0)
            totals["cached_tokens"] += usage.get("cachedContentTokenCount", 0)
        totals["total_tokens"] = totals["prompt_tokens"] + totals["output_tokens"] + totals["thought_tokens"]
        return totals

    def expire_caches(self) -> None:
        for record in self.caches.values():
            record["expired"] = True

    def expire_files(self) -> None:
        """Make every uploaded file unusable, as after Gemini's 48 hours."""
        for record in self.files.values():
            record["expired"] = True

    def _file_json(self, name: str) -> dict:
        record = self.files[name]
        return {"name": name, "uri": f"{self.url}/v1beta/{name}", "mimeType": record["mime_type"],
                "sizeBytes": str(len(record["bytes"])), "state": "ACTIVE",
                "displayName": record.get("display_name", ""),
                "createTime": _rfc3339(record["created"]),
                "expirationTime": _rfc3339(record["created"] + FILE_LIFETIME_S)}

    def next_signature(self) -> str:
        with self._lock:
            self.signature_counter += 1
            signature = base64.b64encode(f"sig-{self.signature_counter}".encode()).decode()
            self.issued_signatures.add(signature)
            return signature

    def unsigned_call(self, model: str, body: dict) -> str | None:
        """What Gemini 3 refuses: a function call of the current turn sent back without the signature
        it came with. The current turn is everything after the last user message with text; the first
        call of each model step there must carry a signature this fake issued, unchanged."""
        if not model.startswith("gemini-3"):
            return None
        contents = body.get("contents") or []
        user_texts = [n for n, c in enumerate(contents)
                      if c.get("role", "user") == "user" and any("text" in p for p in c.get("parts", []))]
        for content in contents[(user_texts[-1] + 1) if user_texts else 0:]:
            calls = [p for p in content.get("parts", []) if "functionCall" in p or "function_call" in p]
            if content.get("role") == "model" and calls:
                signature = calls[0].get("thoughtSignature") or calls[0].get("thought_signature")
                if signature not in self.issued_signatures:
                    name = (calls[0].get("functionCall") or calls[0].get("function_call") or {}).get("name")
                    return f"function call `{name}`"
        return None

    def _next_reply(self, body: dict) -> Reply:
        text = _contents_text(body) or "(nothing)"
        if is_title_request(body):
            # A title request: the first words of the user's message, as a cheap model would. Titles
            # run beside replies, so they never take a reply scripted for a test.
            first = text.split("Assistant:")[0].removeprefix("User:").split()
            return Reply(parts=[" ".join(first[:5]).title() or "New conversation"])
        with self._lock:
            if self.script:
                reply = self.script.popleft()
                # Signatures a test scripted (recorded from Gemini, say) are the fake's own too.
                self.issued_signatures.update(p["thoughtSignature"] for p in reply.wire_parts()
                                              if p.get("thoughtSignature"))
                return reply
        if self.default is not None:
            return self.default
        words = f"Echo: {text}".split(" ")
        parts: list = [w if i == 0 else " " + w for i, w in enumerate(words)]
        if _thinking(body).get("include_thoughts") or _thinking(body).get("includeThoughts"):
            parts.insert(0, {"text": "Thinking about an echo.", "thought": True})
        return Reply(parts=parts)

    # -- the HTTP side ------------------------------------------------------------
    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # Headers and body go out as separate writes; without this, Nagle
                # plus delayed ACK adds ~40 ms to keep-alive answers.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args):  # quiet
                pass

            def _send_json(self, status: int, payload: dict, headers: dict | None = None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, code: int, message: str, status: str | None = None, headers=None):
                self._send_json(code, {"error": {"code": code, "message": message,
                                                 "status": status or _STATUS.get(code, "UNKNOWN")}}, headers)

            def _read_json(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                return json.loads(raw) if raw else {}

            def _record(self, body, match=None) -> dict:  # noqa: D401
                entry = {"method": self.command, "path": self.path, "headers": dict(self.headers),
                         "json": body, "method_name": match["method"] if match else None,
                         "model": match["model"] if match else None, "at": time.monotonic(),
                         "peer": self.client_address}  # a kept-alive connection's calls share it
                with fake._lock:
                    fake.requests.append(entry)
                    if fake.keep_requests is not None and len(fake.requests) > 2 * fake.keep_requests:
                        del fake.requests[:len(fake.requests) - fake.keep_requests]  # ([:-0] is empty)
                return entry

            def _authorized(self) -> bool:
                key = self.headers.get("x-goog-api-key")
                if not key:
                    self._error(403, "Method doesn't allow unregistered callers.", "PERMISSION_DENIED")
                    return False
                if key == BAD_KEY:
                    self._error(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT")
                    return False
                return True

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                file_match = re.match(r"^/v1\w*/(files/[^/]+)$", path)
                if file_match:
                    self._record(None)
                    name = file_match[1]
                    if name not in fake.files or fake.files[name]["expired"]:
                        return self._error(403, f"You do not have permission to access the File {name}.")
                    return self._send_json(200, fake._file_json(name))
                match = _MODELS.match(path)
                self._record(None)
                if not match:
                    return self._error(404, f"no such path {path}")
                if not self._authorized():
                    return None
                if fake.list_error:
                    return self._error(*fake.list_error)
                if match["model"]:
                    found = next((m for m in fake.models if m["name"] == f"models/{match['model']}"), None)
                    return self._send_json(200, found) if found else self._error(404, "model not found")
                query = dict(p.split("=", 1) for p in (self.path.split("?", 1) + [""])[1].split("&") if "=" in p)
                size = int(query.get("pageSize", 50))
                start = int(query.get("pageToken") or 0)
                page = fake.models[start:start + size]
                payload = {"models": page}
                if start + size < len(fake.models):
                    payload["nextPageToken"] = str(start + size)
                self._send_json(200, payload)

            def do_POST(self):
                path = self.path.split("?", 1)[0]
                if path.startswith("/_upload/"):
                    return self._upload_chunk(path.rsplit("/", 1)[1])
                body = self._read_json()
                if re.match(r"^/upload/v1\w*/files$", path):
                    self._record(body)
                    if not self._authorized():
                        return None
                    session = f"s{len(fake._sessions) + 1}"
                    meta = body.get("file") or {}
                    fake._sessions[session] = {"bytes": b"", "mime_type": self.headers.get(
                        "X-Goog-Upload-Header-Content-Type") or meta.get("mimeType") or meta.get("mime_type")
                        or "application/octet-stream",
                        "display_name": meta.get("displayName") or meta.get("display_name") or ""}
                    return self._send_json(200, {}, {"X-Goog-Upload-URL": f"{fake.url}/_upload/{session}",
                                                     "X-Goog-Upload-Status": "active"})
                if re.match(r"^/v1\w*/cachedContents$", path):
                    self._record(body)
                    if not self._authorized():
                        return None
                    name = f"cachedContents/c{len(fake.caches) + 1}"
                    tokens = _count_tokens(body, fake.files)
                    fake.caches[name] = {"model": body.get("model", ""), "tokens": tokens, "expired": False,
                                         "body": body}
                    return self._send_json(200, {"name": name, "model": body.get("model"),
                                                 "expireTime": _rfc3339(fake.clock() + _ttl_s(body)),
                                                 "usageMetadata": {"totalTokenCount": tokens}})
                match = _CALL.match(path)
                self._record(body, match)
                if not match:
                    return self._error(404, f"no such method {path}")
                if not self._authorized():
                    return None
                known = any(m["name"] == f"models/{match['model']}" for m in fake.models)
                if not known:
                    return self._error(404, f"models/{match['model']} is not found for API version "
                                            f"{match['ver']}, or is not supported for generateContent.")
                cached = body.get("cachedContent") or body.get("cached_content")
                if cached:
                    record = fake.caches.get(cached)
                    if record is None or record["expired"]:
                        return self._error(403, f"CachedContent not found (or permission denied): {cached}",
                                           "PERMISSION_DENIED")
                    if body.get("systemInstruction") or body.get("tools") or body.get("toolConfig"):
                        return self._error(400, "CachedContent can not be used with GenerateContent request "
                                                "setting system_instruction, tools or tool_config.")
                unsigned = fake.unsigned_call(match["model"], body)
                if unsigned:
                    return self._error(400, "Function call is missing a thought_signature in functionCall "
                                            f"parts. This is required for tools to work correctly: {unsigned}.")
                missing = self._missing_file(body)
                if missing:
                    return self._error(403, f"You do not have permission to access the File {missing} "
                                            "or it may not exist.", "PERMISSION_DENIED")
                if match["method"] == "countTokens":
                    return self._send_json(200, {"totalTokens": _count_tokens(body, fake.files)})
                if match["method"] not in ("generateContent", "streamGenerateContent"):
                    return self._error(404, f"unknown method {match['method']}")
                reply = fake._next_reply(body)
                if reply.delay_s and not self._open_after(reply.delay_s):
                    self.close_connection = True
                    return  # the client left while the model thought: nothing is sent
                if reply.error:
                    headers = {"Retry-After": reply.retry_after} if reply.retry_after else None
                    return self._error(reply.error[0], reply.error[1], reply.error_status, headers)
                bill = {"model": match["model"], "usage": {}}
                if match["method"] == "generateContent":
                    whole = self._whole(reply, body)
                    self._bill(bill, whole.get("usageMetadata"))  # billed as generated, before it is read
                    return self._send_json(200, whole)
                return self._stream(reply, body, bill)

            def _bill(self, bill: dict, usage: dict | None):
                """Record the usage about to be sent as what this call is billed (the last one counts)."""
                if usage is None:
                    return
                with fake._lock:
                    if not bill["usage"]:
                        fake.billed.append(bill)
                    bill["usage"] = dict(usage)

            def _client_gone(self) -> bool:
                readable = _readable(self.connection, 0)
                try:
                    return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def _upload_chunk(self, session_id: str):
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                session = fake._sessions.get(session_id)
                if session is None:
                    return self._error(404, "no such upload")
                session["bytes"] += data
                command = self.headers.get("X-Goog-Upload-Command", "")
                self._record({"upload_session": session_id, "bytes": len(data), "command": command})
                if "finalize" not in command:
                    return self._send_json(200, {}, {"X-Goog-Upload-Status": "active"})
                name = f"files/{session_id}-{len(fake.files) + 1}"
                fake.files[name] = {**fake._sessions.pop(session_id), "expired": False, "created": fake.clock()}
                return self._send_json(200, {"file": fake._file_json(name)}, {"X-Goog-Upload-Status": "final"})

            def _missing_file(self, body: dict) -> str | None:
                for content in body.get("contents") or []:
                    for part in content.get("parts", []):
                        data = part.get("fileData") or part.get("file_data")
                        if data:
                            uri = data.get("fileUri") or data.get("file_uri") or ""
                            name = "files/" + uri.rsplit("/files/", 1)[-1]
                            if name not in fake.files or fake.files[name]["expired"]:
                                return name
                return None

            def _prompt_tokens(self, body: dict) -> tuple[int, int]:
                """(prompt tokens with the cached ones, cached tokens): counted once a request, as
                Gemini does; a stream's running totals all reuse it."""
                cached_name = body.get("cachedContent") or body.get("cached_content")
                cached = fake.caches[cached_name]["tokens"] if cached_name in fake.caches else 0
                return _count_tokens(body, fake.files) + cached, cached

            def _usage(self, reply: Reply, prompt: tuple[int, int], parts: list) -> dict:
                if reply.usage is not None:
                    return reply.usage
                tokens, cached = prompt
                out = sum(len(str(p.get("text", "")).split()) for p in parts if not p.get("thought"))
                thoughts = sum(len(str(p.get("text", "")).split()) for p in parts if p.get("thought"))
                usage = {"promptTokenCount": tokens, "candidatesTokenCount": out,
                         "totalTokenCount": tokens + out + thoughts}
                if cached:
                    usage["cachedContentTokenCount"] = cached
                if thoughts:
                    usage["thoughtsTokenCount"] = thoughts
                return usage

            def _signed(self, parts: list, reply: Reply) -> list:
                # Gemini 3 signs the first part of a turn (and every function call).
                signed = [dict(p) for p in parts]
                if not reply.sign:
                    return signed
                for index, part in enumerate(signed):
                    if index == 0 or "functionCall" in part:
                        part["thoughtSignature"] = fake.next_signature()
                return signed

            def _candidate(self, reply: Reply, parts: list, final: bool) -> dict:
                candidate: dict = {"index": 0}
                if parts:
                    candidate["content"] = {"role": "model", "parts": parts}
                if final:
                    if reply.finish_reason:
                        candidate["finishReason"] = reply.finish_reason
                    if reply.grounding:
                        candidate["groundingMetadata"] = reply.grounding
                    if reply.safety_ratings:
                        candidate["safetyRatings"] = reply.safety_ratings
                    if reply.extra_candidate:
                        candidate.update(reply.extra_candidate)
                return candidate

            def _whole(self, reply: Reply, body: dict) -> dict:
                if reply.block_reason:
                    tokens = _count_tokens(body, fake.files)
                    return {"promptFeedback": {"blockReason": reply.block_reason},
                            "usageMetadata": {"promptTokenCount": tokens, "totalTokenCount": tokens}}
                parts = self._signed(reply.wire_parts(), reply)
                return {"candidates": [self._candidate(reply, parts, True)],
                        "usageMetadata": self._usage(reply, self._prompt_tokens(body), parts), "modelVersion": "fake"}

            def _stream(self, reply: Reply, body: dict, bill: dict):
                # Framed as Gemini frames a stream (chunked: see the recorded headers in
                # tests/fixtures/real-gemini), so the client's connection serves its next call.
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def send(payload: dict):
                    event = b"data: " + json.dumps(payload).encode() + b"\r\n\r\n"
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(event), event))
                    self.wfile.flush()

                try:
                    if self._events(reply, body, bill, send):
                        self.wfile.write(b"0\r\n\r\n")
                        return
                except (BrokenPipeError, ConnectionResetError):
                    with fake._lock:
                        fake.closed_streams.append(time.monotonic())
                self.close_connection = True  # the client left mid-stream

            def _events(self, reply: Reply, body: dict, bill: dict, send) -> bool:
                """A stream's events through `send`: True once it ended, False if the client left."""
                if reply.block_reason:
                    whole = self._whole(reply, body)
                    self._bill(bill, whole["usageMetadata"])
                    send(whole)
                    return True
                parts = self._signed(reply.wire_parts(), reply)
                prompt = self._prompt_tokens(body)
                if not parts:
                    usage = self._usage(reply, prompt, parts)
                    self._bill(bill, usage)
                    send({"candidates": [self._candidate(reply, [], True)], "usageMetadata": usage})
                    return True
                for index, part in enumerate(parts):
                    if index and self._client_gone():
                        return False  # Gemini stops generating (and billing) for a client that left
                    if reply.fail_after is not None and index == reply.fail_after:
                        send({"error": {"code": 500, "message": "stream broke", "status": "INTERNAL"}})
                        return True
                    last = index == len(parts) - 1
                    chunk = {"candidates": [self._candidate(reply, [part], last)], "modelVersion": "fake"}
                    # A running total on every chunk; a scripted usage only at the end.
                    usage = self._usage(reply, prompt, parts) if last else (
                        None if reply.usage is not None else self._usage(reply, prompt, parts[:index + 1]))
                    if usage is not None:
                        chunk["usageMetadata"] = usage
                    self._bill(bill, usage)
                    send(chunk)
                    if reply.chunk_delay_s and not last and not self._open_after(reply.chunk_delay_s):
                        return False
                    if index == 0 and reply.hold is not None:
                        deadline = time.monotonic() + 30
                        while not reply.hold.is_set() and time.monotonic() < deadline:
                            if not self._open_after(0.02):
                                return False
                return True

            def _open_after(self, seconds: float) -> bool:
                """Wait, noticing at once if the client closes the stream (False, and noted)."""
                readable = _readable(self.connection, seconds)
                if readable:
                    try:
                        closed = self.connection.recv(1, socket.MSG_PEEK) == b""
                    except OSError:
                        closed = True
                    if closed:
                        with fake._lock:
                            fake.closed_streams.append(time.monotonic())
                        return False
                return True

            def do_DELETE(self):
                path = self.path.split("?", 1)[0]
                self._record(None)
                match = re.match(r"^/v1\w*/(cachedContents/[^/]+|files/[^/]+)$", path)
                if not match:
                    return self._error(404, "not found")
                store = fake.caches if match[1].startswith("cached") else fake.files
                if store.pop(match[1], None) is None:
                    return self._error(404, f"{match[1]} not found")
                return self._send_json(200, {})

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="Offline fake of the Gemini REST API.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--chunks", type=int, default=0,
                        help="answer every call with this many chunks instead of echoing")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--keep-requests", type=int, default=0,
                        help="how many of the last requests to keep (nobody reads them from outside)")
    args = parser.parse_args()
    fake = FakeGemini(port=args.port, keep_requests=args.keep_requests)
    if args.chunks:
        fake.default = Reply(parts=[f"word{n} " for n in range(args.chunks)], chunk_delay_s=args.chunk_delay)
    fake.start()
    # What is loaded now lives as long as the process: out of the collector's passes with
    # it, so that a full pass costs what a request left behind, not the modules' objects.
    gc.freeze()
    print(f"fake Gemini listening on {fake.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
