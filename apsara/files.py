"""Stored files: uploads and the images models make.

`<data>/files/<user>/<id>.bin` holds the bytes, `<id>.json` the metadata
(name, type, size, SHA-256, and the Gemini Files API reference while one is
alive). Uploads are written straight to `<data>/files/.incoming/` by the
multipart parser, never held in memory, then hashed, typed from their bytes and
moved into place. Every temp file a request made is removed when it ends,
whatever happened (413 halfway, extra multipart parts, a refused type); what a
crash leaves there is swept while the server runs, every `sweep_every_s`.
File URLs are signed (HMAC-SHA256 with APSARA_SECRET_KEY) and expire, so a
browser `<img src>` can load them without a Bearer header; behind
APSARA_PUBLIC_URL they are absolute.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import orjson

from .clock import new_id, now_iso
from .conversations.store import InvalidId, check_id
from .durable import write_atomically
from .errors import ApiError
from .filetypes import sniff, text_encoding

PRIVATE_FIELDS = ("gemini",)

_CHUNK = 1024 * 1024


def examine(temp_path: Path, filename: str) -> dict:
    """The metadata of an upload: its hash and size, and its type decided from its bytes (415 if unreadable)."""
    digest, size, head = hashlib.sha256(), 0, b""
    with open(temp_path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            if len(head) < 8192:
                head += chunk[: 8192 - len(head)]
            digest.update(chunk)
            size += len(chunk)
    mime_type = sniff(head, filename)
    encoding = text_encoding(head) if mime_type and mime_type.startswith("text/") else None
    if mime_type is None:
        raise ApiError(415, "this type of file cannot be read by the models; send an image, PDF, "
                            "audio, video or text file")
    file_id = new_id("f")
    meta = {"id": file_id, "filename": filename or f"{file_id}", "mime_type": mime_type,
            "size_bytes": size, "sha256": digest.hexdigest(), "created_at": now_iso()}
    if encoding and encoding != "utf-8":
        meta["charset"] = encoding  # served with it, so a browser reads UTF-16 text right
    return meta


def generated_meta(data: bytes, mime_type: str, filename: str) -> dict:
    return {"id": new_id("f"), "filename": filename, "mime_type": mime_type, "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "created_at": now_iso(), "generated": True}


class FileStore:
    # An upload left in .incoming this long is a crash's leftover, never one in progress
    # (the parser writes to it as bytes arrive, so an upload still coming keeps it fresh).
    LEFTOVER_AGE_S = 3600.0

    def __init__(self, data_dir: Path, secret_key: str, url_ttl_s: int = 3600, public_url: str | None = None,
                 sweep_every_s: float = 600.0):
        self.root = Path(data_dir) / "files"
        # With APSARA_PUBLIC_URL set, URLs are absolute, so a frontend on another origin uses them as they are.
        self._url_prefix = public_url or ""
        self.incoming = self.root / ".incoming"
        self._secret = secret_key.encode()
        self._url_ttl_s = url_ttl_s
        self._sweep_every_s = sweep_every_s
        self._next_sweep = 0.0

    # -- paths -------------------------------------------------------------------
    def _folder(self, owner: str, create: bool = False) -> Path:
        folder = self.root / check_id(owner)
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _paths(self, owner: str, file_id: str) -> tuple[Path, Path]:
        folder = self._folder(owner)
        check_id(file_id)
        return folder / f"{file_id}.bin", folder / f"{file_id}.json"

    # -- writing -----------------------------------------------------------------
    def incoming_file(self):
        """Where the multipart parser writes an upload as it arrives."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        return tempfile.NamedTemporaryFile(dir=self.incoming, prefix="up-", delete=False)

    def adopt(self, owner: str, temp_path: Path, filename: str) -> dict:
        """Hash and type an uploaded temp file, then move it into the user's files."""
        meta = examine(temp_path, filename)
        blob, meta_path = self._paths(owner, meta["id"])
        self._folder(owner, create=True)
        os.replace(temp_path, blob)
        write_atomically(meta_path, orjson.dumps(meta))
        return meta

    def save_bytes(self, owner: str, data: bytes, mime_type: str, filename: str) -> dict:
        """Store bytes made here (a generated image); their type is already known."""
        meta = generated_meta(data, mime_type, filename)
        blob, meta_path = self._paths(owner, meta["id"])
        self._folder(owner, create=True)
        write_atomically(blob, data)
        write_atomically(meta_path, orjson.dumps(meta))
        return meta

    def restore(self, owner: str, record: dict, data: bytes) -> dict | None:
        """Store an imported file's bytes, typed from the bytes, under its id when that is free
        (a new id otherwise). The same bytes already stored under that id are reused.
        None when the models cannot read this type."""
        mime_type = sniff(data[:8192], record.get("filename") or "")
        if mime_type is None:
            return None
        digest = hashlib.sha256(data).hexdigest()
        file_id = record["id"]
        existing = self.get(owner, file_id)
        if existing is not None:
            if existing.get("sha256") == digest:
                return existing
            file_id = new_id("f")
        meta = {"id": file_id, "filename": (record.get("filename") or file_id)[:255], "mime_type": mime_type,
                "size_bytes": len(data), "sha256": digest, "created_at": record.get("created_at") or now_iso()}
        self._keep_restored(owner, meta, data)
        return {**meta, "restored": True}

    def _keep_restored(self, owner: str, meta: dict, data: bytes) -> None:
        blob, meta_path = self._paths(owner, meta["id"])
        self._folder(owner, create=True)
        write_atomically(blob, data)
        write_atomically(meta_path, orjson.dumps(meta))

    def set_gemini_ref(self, owner: str, file_id: str, ref: dict | None) -> None:
        """Remember (or forget) this file's upload to the Gemini Files API."""
        meta = self.get(owner, file_id)
        if meta is None:
            return
        if ref is None:
            meta.pop("gemini", None)
        else:
            meta["gemini"] = ref
        write_atomically(self._paths(owner, file_id)[1], orjson.dumps(meta))

    # -- reading -----------------------------------------------------------------
    def get(self, owner: str, file_id: str) -> dict | None:
        try:
            return orjson.loads(self._paths(owner, file_id)[1].read_bytes())
        except (FileNotFoundError, InvalidId):
            return None

    def content(self, owner: str, file_id: str):
        """The bytes to serve or upload, never read whole: a path here, a reader in the database store."""
        return self._paths(owner, file_id)[0]

    def read_bytes(self, owner: str, file_id: str) -> bytes:
        return self._paths(owner, file_id)[0].read_bytes()

    def owners(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def ids(self, owner: str) -> list[str]:
        try:
            return [p.stem for p in self._folder(owner).glob("*.json") if not p.name.startswith(".")]
        except InvalidId:
            return []

    def delete(self, owner: str, file_id: str) -> None:
        for path in self._paths(owner, file_id):
            path.unlink(missing_ok=True)

    def public(self, owner: str, meta: dict) -> dict:
        view = {k: v for k, v in meta.items() if k not in PRIVATE_FIELDS}
        view["url"] = self.signed_url(owner, meta["id"])
        return view

    # -- signed URLs -------------------------------------------------------------
    def _signature(self, owner: str, file_id: str, expires: int) -> str:
        message = f"{owner}\n{file_id}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def signed_url(self, owner: str, file_id: str) -> str:
        # Rounded up to the next 5 minutes, so repeated views of one page reuse URLs (cache-friendly).
        expires = (int(time.time() + self._url_ttl_s) // 300 + 1) * 300
        query = urlencode({"user": owner, "expires": expires,
                           "signature": self._signature(owner, file_id, expires)})
        return f"{self._url_prefix}/api/v1/files/{file_id}/content?{query}"

    def verify(self, file_id: str, owner: str, expires: str, signature: str) -> bool:
        try:
            expires_at = int(expires)
            check_id(owner)
            check_id(file_id)
        except (ValueError, InvalidId):
            return False
        if expires_at < time.time():
            return False
        return hmac.compare_digest(self._signature(owner, file_id, expires_at), signature or "")

    @staticmethod
    def discard(paths: list[str]) -> None:
        """Remove a request's temp files (those adopted are already gone)."""
        for path in paths:
            Path(path).unlink(missing_ok=True)

    def sweep_now_and_then(self) -> None:
        """Sweep .incoming if the last sweep is `sweep_every_s` old; called on requests."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_every_s
            self.sweep_incoming()

    def sweep_incoming(self, older_than_s: float | None = None) -> None:
        if not self.incoming.is_dir():
            return
        cutoff = time.time() - (self.LEFTOVER_AGE_S if older_than_s is None else older_than_s)
        for leftover in self.incoming.iterdir():
            try:
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
            except FileNotFoundError:
                pass
