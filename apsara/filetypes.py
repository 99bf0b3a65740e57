"""What a file is, decided from its bytes (magic numbers), never from its name.

Only types Gemini reads are accepted: images, PDF, audio, video and text.
Binary formats are recognised by puremagic's signature table (a pure-Python
port of the magic databases, kept up to date on PyPI), then mapped to the one
name Gemini takes for each format. Text is what decodes: UTF-8 without NUL
bytes, or UTF-16/UTF-32 that starts with its byte-order mark (puremagic has no
notion of encodings, and a UTF-16 BOM `FF FE` must never pass as an MPEG frame).
Once the bytes say it *is* text, the name may pick which text type (Markdown,
CSV, Python...), since every text type is served the same safe way. An
executable renamed `.png` is not a PNG.
"""
from __future__ import annotations

import codecs

import puremagic

# puremagic's names (or, where it gives none, the extension) -> the one we store.
_ACCEPTED = {
    "image/png": "image/png", "image/jpeg": "image/jpeg", "image/gif": "image/gif", "image/webp": "image/webp",
    "image/heic": "image/heic", "image/heif": "image/heif", ".heic": "image/heic", ".heif": "image/heif",
    "application/pdf": "application/pdf",
    "audio/mpeg": "audio/mpeg", ".mp3": "audio/mpeg", "audio/flac": "audio/flac", "audio/ogg": "audio/ogg",
    "application/ogg": "audio/ogg", ".oga": "audio/ogg", ".ogg": "audio/ogg",
    "audio/wav": "audio/wav", "audio/wave": "audio/wav", "audio/x-wav": "audio/wav",
    "audio/aiff": "audio/aiff", "audio/x-aiff": "audio/aiff", "audio/aac": "audio/aac", "audio/mp4": "audio/mp4",
    ".m4a": "audio/mp4",
    "video/mp4": "video/mp4", "video/quicktime": "video/quicktime", "video/webm": "video/webm",
    "video/x-flv": "video/x-flv", "video/mpeg": "video/mpeg", "video/x-ms-wmv": "video/x-ms-wmv",
    "video/x-ms-asf": "video/x-ms-wmv", "video/avi": "video/x-msvideo", "video/x-msvideo": "video/x-msvideo",
    "video/3gpp": "video/3gpp", ".3gp": "video/3gpp",
}
# Byte-order marks of the wider Unicode encodings (UTF-32 first: its LE mark starts like UTF-16's).
_BOMS = [(codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")]

TEXT_BY_EXTENSION = {
    "md": "text/markdown", "markdown": "text/markdown", "csv": "text/csv", "tsv": "text/tab-separated-values",
    "html": "text/html", "htm": "text/html", "css": "text/css", "xml": "text/xml", "rtf": "text/rtf",
    "js": "text/javascript", "mjs": "text/javascript", "ts": "text/plain", "py": "text/x-python",
    "json": "application/json", "yaml": "text/plain", "yml": "text/plain", "svg": "image/svg+xml",
}

# What a browser could run: served as a download, never inline.
ACTIVE_TYPES = {"text/html", "image/svg+xml", "text/javascript", "application/javascript", "text/xml",
                "application/xhtml+xml"}

INPUT_KIND = {"image": "image", "audio": "audio", "video": "video"}


def sniff_binary(head: bytes) -> str | None:
    """The accepted binary type puremagic finds in these first bytes, or None."""
    try:
        found = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        return None
    # Strongest match first; among equals puremagic's own order (longest signature first).
    for match in sorted(found, key=lambda m: -m.confidence):
        accepted = _ACCEPTED.get(match.mime_type) or _ACCEPTED.get(match.extension.lower())
        if accepted:
            return accepted
    return None


def text_encoding(sample: bytes) -> str | None:
    """The encoding these bytes are text in ("utf-8", "utf-16-le"...), or None if not text.

    `sample` may end inside a multi-byte character.
    """
    for bom, encoding in _BOMS:
        if sample.startswith(bom):
            decoder = codecs.getincrementaldecoder(encoding)()
            try:
                text = decoder.decode(sample[len(bom):], final=False)
            except UnicodeDecodeError:
                return None
            return encoding if "\x00" not in text else None
    if b"\x00" in sample:
        return None
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        return "utf-8" if exc.start >= len(sample) - 3 and exc.reason == "unexpected end of data" else None


def sniff(head: bytes, filename: str = "") -> str | None:
    """The mime type of a file from its first bytes (4 KiB or more), or None if unsupported."""
    encoding = text_encoding(head) if head else None
    # A byte-order mark settles it: UTF-16 text starting FF FE is not audio.
    binary = None if encoding and encoding != "utf-8" else sniff_binary(head)
    if binary:
        return binary
    if not head or encoding is None:
        return None
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if extension in TEXT_BY_EXTENSION:
        return TEXT_BY_EXTENSION[extension]
    if encoding != "utf-8":
        return "text/plain"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    if stripped.startswith(b"<svg") or (stripped.startswith(b"<?xml") and b"<svg" in stripped[:1024]):
        return "image/svg+xml"
    return "text/plain"


def input_kind(mime_type: str) -> str:
    """Which model input a file needs: image, audio, video, pdf or text."""
    if mime_type == "application/pdf":
        return "pdf"
    family = mime_type.split("/", 1)[0]
    if mime_type == "image/svg+xml":
        return "text"
    return INPUT_KIND.get(family, "text")
