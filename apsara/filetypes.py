"""What a file is, decided from its bytes (magic numbers), never from its name.

Only types Gemini reads are accepted: images, PDF, audio, video and text. For
text the bytes decide that it *is* text (UTF-8, no NUL bytes); the name may then
pick which text type (Markdown, CSV, Python...), since every text type is
served the same safe way. An executable renamed `.png` is not a PNG.
"""
from __future__ import annotations

# (offset, signature, mime type); checked in order.
_SIGNATURES = [
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"fLaC", "audio/flac"),
    (0, b"OggS", "audio/ogg"),
    (0, b"\x1a\x45\xdf\xa3", "video/webm"),
    (0, b"FLV\x01", "video/x-flv"),
    (0, b"\x00\x00\x01\xba", "video/mpeg"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "video/x-ms-wmv"),
]
_RIFF = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}
_FTYP = {b"heic": "image/heic", b"heix": "image/heic", b"mif1": "image/heif", b"msf1": "image/heif",
         b"qt  ": "video/quicktime", b"3gp4": "video/3gpp", b"3gp5": "video/3gpp", b"3g2a": "video/3gpp",
         b"M4A ": "audio/aac", b"M4B ": "audio/aac"}
_AIFF = {b"AIFF": "audio/aiff", b"AIFC": "audio/aiff"}

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
    for offset, signature, mime in _SIGNATURES:
        if head[offset:offset + len(signature)] == signature:
            return mime
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head[:4] == b"FORM" and head[8:12] in _AIFF:
        return _AIFF[head[8:12]]
    if head[4:8] == b"ftyp":
        return _FTYP.get(head[8:12], "video/mp4")
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "audio/aac"  # ADTS
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "audio/mpeg"  # MPEG audio frame sync
    return None


def is_text(sample: bytes) -> bool:
    """UTF-8 without NUL bytes. `sample` may end inside a multi-byte character."""
    if b"\x00" in sample:
        return False
    try:
        sample.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        return exc.start >= len(sample) - 3 and exc.reason == "unexpected end of data"


def sniff(head: bytes, filename: str = "") -> str | None:
    """The mime type of a file from its first bytes (4 KiB or more), or None if unsupported."""
    binary = sniff_binary(head)
    if binary:
        return binary
    if not head or not is_text(head):
        return None
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if extension in TEXT_BY_EXTENSION:
        return TEXT_BY_EXTENSION[extension]
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
