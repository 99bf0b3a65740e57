"""Request bodies the service can read, checked before anything else looks at them.

A JSON body must be JSON (strictly: no NaN, valid UTF-8), nested at most 64
levels, with every string and key valid Unicode (no lone surrogate), and but for
an import no object of more than 1,000 members (no request of this API has
one; a million unknown keys would each be a validation error): else 400
INVALID_ARGUMENT. It may be at most 16 MB (or the upload limit, if lower),
whether it came with a Content-Length or chunked: else 413. Uploads (multipart)
are bounded by the upload limit alone; an import (a JSON body or a multipart
file) by the import limit, and anything else sent to it is 415. Nothing else (schemas, views, storage,
the error handler) ever sees a body that breaks these rules, so none of them
can fail on one.
"""
from __future__ import annotations

import codecs
import json

from flask import current_app, request

from ..errors import ApiError

JSON_BODY_LIMIT = 16 * 1024 * 1024
MAX_JSON_DEPTH = 64
MAX_JSON_MEMBERS = 1000
UPLOAD_PATH = "/api/v1/files"
IMPORT_PATH = "/api/v1/conversations/import"
NOT_UTF8 = "the body is not valid UTF-8"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _check_values(value, max_members: int | None) -> None:
    """Depth, Unicode and object sizes of a parsed body, walked without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise ApiError(400, f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            if max_members is not None and len(item) > max_members:
                raise ApiError(400, f"the JSON body holds an object of more than {max_members:,} members")
            for key, child in item.items():
                _check_text(key)
                stack.append((child, depth + 1))
        else:
            stack.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "the JSON body holds a string that is not valid Unicode "
                            "(a lone surrogate such as \\ud800)") from None


def body_text(raw: bytes) -> str:
    """The body as text, strictly UTF-8, or ApiError(400).

    json.loads would guess UTF-16 or UTF-32 from bytes and read them, but the
    views read the body again with orjson, which takes UTF-8 only. A UTF-8 byte
    order mark is refused too: JSON senders must not add one (RFC 8259, 8.1),
    orjson refuses it, and one reading of a body everywhere beats two.
    """
    if raw.startswith(codecs.BOM_UTF8):
        raise ApiError(400, NOT_UTF8 + " (it starts with a byte order mark, which JSON does not allow)")
    # UTF-16 and UTF-32 without a byte order mark decode as UTF-8 text full of NULs;
    # JSON text never holds a raw NUL (it must be written \u0000), so one means another encoding.
    if b"\x00" in raw:
        raise ApiError(400, NOT_UTF8 + " (it holds NUL bytes: UTF-16 or UTF-32?)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, NOT_UTF8) from None


def parse_json_body(raw: bytes, max_members: int | None = None):
    """The body's value, or ApiError(400) saying why it cannot be read."""
    text = body_text(raw)
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    _check_values(value, max_members)
    return value


def _chunked() -> bool:
    return "chunked" in (request.headers.get("Transfer-Encoding") or "").lower()


def read_body(cache: bool = True) -> bytes:
    """The whole body, or ApiError: 413 over the limit, 400 when it ended before its Content-Length."""
    raw = request.get_data(cache=cache)  # 413 here when a Content-Length is over the limit
    # A chunked body is cut at the limit without a word from werkzeug: one that
    # reached it did not fit.
    if request.max_content_length is not None and len(raw) >= request.max_content_length:
        raise ApiError(413, "request body is too large")
    # Gunicorn ends the body where the client stopped sending (a half-closed
    # connection): what came is a prefix of the request, not the request.
    if request.content_length is not None and len(raw) != request.content_length:
        raise ApiError(400, f"the body ended after {len(raw)} of the {request.content_length} bytes "
                            "its Content-Length announced")
    return raw


def check_body() -> None:
    """before_request: refuse a body we could not read, or would ignore."""
    if request.path == IMPORT_PATH:
        # An export is as large as it is: the import limit, JSON or multipart (plus the part's headers).
        framing = 4096 if request.mimetype == "multipart/form-data" else 0
        request.max_content_length = current_app.extensions["apsara"].settings.import_limit_bytes + framing
    elif request.path != UPLOAD_PATH:
        # Werkzeug then refuses a larger body with 413, chunked ones as they are read.
        request.max_content_length = min(JSON_BODY_LIMIT, current_app.config["MAX_CONTENT_LENGTH"])
    if request.method not in ("POST", "PUT", "PATCH") or not request.path.startswith("/api/"):
        return
    if request.path == IMPORT_PATH and request.mimetype == "multipart/form-data":
        return  # the view reads the file and checks it as a JSON body is checked
    if request.path == IMPORT_PATH and not request.is_json:
        raise ApiError(415, "send the export as application/json, or as multipart/form-data in the field 'file'")
    if request.path.startswith(UPLOAD_PATH) or not (request.content_length or _chunked() or request.is_json):
        return
    if not request.is_json:
        # A chunked request may well carry nothing at all: only a body is refused.
        if request.content_length or read_body():
            raise ApiError(415, "send the request body as application/json")
        return
    raw = read_body()
    if raw:
        parse_json_body(raw, None if request.path == IMPORT_PATH else MAX_JSON_MEMBERS)
