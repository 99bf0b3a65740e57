"""Log lines: plain text by default, one JSON object per line with APSARA_LOG_FORMAT=json.

Either way a line is one line: in text, control characters in the message are
escaped (`\\n` stays two characters), so nothing a client sends in a URL or a
header can start a line of its own; JSON escapes them by its nature. Callers
never log keys, message text or file contents; the request line holds only ids,
names, numbers and the route template.
"""
from __future__ import annotations

import logging
import re
import time

import orjson

FORMATS = ("text", "json")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _escape(text: str) -> str:
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)


def _extra(record: logging.LogRecord) -> dict:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _stamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={_escape(str(v)) if v is not None else '-'}" for k, v in _extra(record).items())
        line = f"{_stamp(record)} {record.levelname} [{record.name}] {_escape(record.getMessage())}"
        line = f"{line} {fields}" if fields else line
        if record.exc_info:
            # The trace keeps its lines, each marked as a continuation of this one.
            trace = self.formatException(record.exc_info)
            line += "".join(f"\n  | {_escape(part)}" for part in trace.splitlines())
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": _stamp(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage(), **_extra(record)}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else TextFormatter()


def configure_logging(kind: str = "text") -> None:
    """Log every library's lines through one handler with the chosen format, unless the
    host process (a test runner, an embedding app) has already set up the root logger."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_apsara", False)), None)
    if handler is None:
        if root.handlers:
            return
        handler = logging.StreamHandler()
        handler._apsara = True
        root.addHandler(handler)
        logging.getLogger("apsara").setLevel(logging.INFO)  # others stay at WARNING
    handler.setFormatter(formatter(kind))
