"""The bytes of a conversation file (schema_version 2): what is written, and how it is read back.

A file is lines of JSON:

    {"schema_version":2,"conversation":{...header...},"seq":N}     the snapshot's header
    {"messages":[...],"active":{...}}                                the snapshot's message tree
    {"m":{...}}                                                      a mark (below)
    {"seq":N+1,"type":"message","at":"...",...}                     records, appended one
    {"m":{...}}                                                        write (and one fsync) each

- A change appends its records and a new mark in one `write`. The mark is what a
  listing needs (`updated_at`, `message_count`, the offset of the newest header,
  the record count), read from the file's last 4 KB.
- A torn last line (a writer killed or the power cut mid-append) is ignored by
  readers; the store's next writer cuts it off.
- Files of the first format (one JSON document, schema_version 1) are recognised
  by their first bytes; the store reads them as they are.

Records are rows (see journal.py); this module knows only their lines.
"""
from __future__ import annotations

import logging
import os
import re

import orjson

log = logging.getLogger("apsara.store")

SCHEMA_VERSION = 2
MARK = b'{"m":'
# How much of a file's end is read to find its mark.
TAIL = 4096
# A line that is a header record (journal.record() puts seq and type first). Matched at a
# line's start only: a function call's arguments may hold the same keys deeper in a record.
_HEADER_RECORD = re.compile(rb'^\{"seq":\d+,"type":"conversation"', re.MULTILINE)


class CorruptFile(RuntimeError):
    """A conversation file that does not parse (never written by this store)."""


def mark_line(mark: dict) -> bytes:
    return MARK + orjson.dumps(mark) + b"}\n"


def encode(document: dict) -> bytes:
    """A snapshot's bytes: header line, message tree line, mark."""
    header = document["conversation"]
    first = orjson.dumps({"schema_version": SCHEMA_VERSION, "conversation": header,
                          "seq": document.get("seq", 0)}) + b"\n"
    body = orjson.dumps({"messages": document.get("messages", []), "active": document.get("active", {})}) + b"\n"
    mark = {"seq": document.get("seq", 0), "updated_at": header.get("updated_at"),
            "message_count": header.get("message_count", 0), "header_at": 0, "base": 0}
    for _ in range(3):  # `base` counts the mark line, which holds `base`: settle its digits
        mark["base"] = len(first) + len(body) + len(mark_line(mark))
    return first + body + mark_line(mark)


def decode_v1_header(line: bytes) -> dict:
    line = line.rstrip()
    if line.endswith(b","):
        line = line[:-1]
    return orjson.loads(line + b"}")["conversation"]


def is_v1(first_line: bytes) -> bool:
    return first_line.startswith(b'{"schema_version":1,')


def last_line(chunk: bytes) -> bytes | None:
    """The last complete line of a file's tail, if the chunk holds all of it."""
    if not chunk.endswith(b"\n"):
        return None
    start = chunk.rfind(b"\n", 0, len(chunk) - 1) + 1
    return chunk[start:-1] if start or len(chunk) < TAIL else None


def whole_appends(chunk: bytes) -> int:
    """How much of `chunk`, read from where an append began, is whole appends: up to the
    end of its last mark line. An append writes its records and then its mark in one
    write; a reader that meets the records without the mark is reading while that write
    lands (a user message would show without its reply), and takes them on its next read."""
    end = chunk.rfind(b"\n") + 1
    last_line = chunk.rfind(b"\n", 0, max(end - 1, 0)) + 1
    if end and chunk.startswith(MARK, last_line):
        return end  # the usual case: the chunk ends with a mark
    at = chunk.rfind(b"\n" + MARK, 0, end)
    if at < 0:
        return chunk.index(b"\n") + 1 if chunk.startswith(MARK) else 0
    return chunk.index(b"\n", at + 1) + 1


def parse_lines(raw: bytes, conversation_id: str):
    """Snapshot document and the records after it; a torn last line is left out.

    Returns (document, records, end offset of the last whole line, last mark)."""
    end = raw.rfind(b"\n") + 1
    lines = raw[:end].split(b"\n")[:-1]
    if len(lines) < 2:
        raise CorruptFile(conversation_id)
    try:
        head = orjson.loads(lines[0])
        body = orjson.loads(lines[1])
    except ValueError as exc:
        raise CorruptFile(conversation_id) from exc
    if head.get("schema_version") != SCHEMA_VERSION:
        raise CorruptFile(f"{conversation_id}: unknown schema_version")
    document = {"conversation": head["conversation"], "messages": body.get("messages", []),
                "active": body.get("active", {}), "seq": head.get("seq", 0)}
    records, mark = [], None
    for line in lines[2:]:
        if line.startswith(MARK):
            try:
                mark = orjson.loads(line)["m"]
            except ValueError:
                pass
            continue
        try:
            records.append(orjson.loads(line))
        except ValueError:
            # Only a crash mid-append makes a bad line, and the next writer cuts it off;
            # one that survived (a disk that zero-filled) is skipped, never fatal.
            log.warning("conversation %s: skipped an unreadable record", conversation_id)
    return document, records, end, mark


def records_in(chunk: bytes, conversation_id: str) -> list[dict]:
    """The records of whole appended lines (marks left out)."""
    records = []
    for line in chunk.split(b"\n")[:-1]:
        if not line.startswith(MARK):
            try:
                records.append(orjson.loads(line))
            except ValueError:
                log.warning("conversation %s: skipped an unreadable record", conversation_id)
    return records


def ends_a_mark(fd: int, offset: int) -> bool:
    """Whether a mark line ends at `offset`, as at every position a reader took. Not so, the
    file is another one, that got the freed inode number back (a deletion and a new
    conversation of the same id, or two compactions): the position means nothing in it."""
    start = max(0, offset - TAIL)
    tail = os.pread(fd, offset - start, start)
    if len(tail) < offset - start:
        return False  # the file ends before it
    line = last_line(tail)
    return line is not None and line.startswith(MARK)


def mark_at_end(fd: int, size: int) -> dict | None:
    """The mark on a file's last line, or None when its last append was cut short."""
    start = max(0, size - TAIL)
    line = last_line(os.pread(fd, size - start, start))
    if line is None or not line.startswith(MARK):
        return None
    try:
        return orjson.loads(line)["m"]
    except ValueError:
        return None


def last_header_at(raw: bytes) -> int:
    """The offset of the last header record in a file's bytes; 0 when there is none (the
    snapshot's header is current)."""
    last = 0
    for match in _HEADER_RECORD.finditer(raw):
        last = match.start()
    return last
