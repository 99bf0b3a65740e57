"""Stored files: uploads and the images models make.

`<data>/files/<user>/<id>.bin` holds the bytes, `<id>.json` the metadata
(name, type, size, SHA-256, and the Gemini Files API reference while one is
alive). Uploads are written straight to `<data>/files/.incoming/` by the
multipart parser, never held in memory, then hashed, typed from their bytes and
moved into place, their bytes fsynced before the metadata that vouches for them
is written. Every temp file a request made is removed when it ends, whatever
happened (413 halfway, extra multipart parts, a refused type); what a crash
leaves there is swept while the server runs, every `sweep_every_s`. What a
writer killed mid-write leaves in a user's folder (a temp file, a blob whose
metadata never came) is swept at start.

The metadata's mtime says when the file was last used: when it was stored or
changed, or, set IN_USE_S ahead, when a send attached it or a reply or an import
stored it (the message naming it is then on its way). The cleanup (cleanup.py)
spares files used within its grace period and files still marked in use.
Attaching, changing and removing a file hold its owner's lock (`<user>/.lock`),
so a removal never overtakes an attach that found the file, and a metadata
write never brings back a file just removed.
File URLs are signed (HMAC-SHA256 with APSARA_SECRET_KEY) and expire, so a
browser `<img src>` can load them without a Bearer header; behind
APSARA_PUBLIC_URL they are absolute.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import tempfile
import time
import unicodedata
from pathlib import Path
from urllib.parse import urlencode

import orjson

from .clock import new_id, now_iso
from .conversations.locks import LockTimeout, flock_waiting
from .conversations.store import InvalidId, check_id
from .durable import TEMP_PREFIX, on_disk_threads, write_atomically
from .errors import ApiError
from .filetypes import sniff, text_encoding

PRIVATE_FIELDS = ("gemini", "used_until")  # used_until: the database store's mark of use

_CHUNK = 1024 * 1024
MAX_FILENAME = 255

# Characters a file name never keeps: control characters (C0, DEL, C1), which no HTTP
# header may carry, line and paragraph separators, and the bidirectional overrides and
# isolates that make "\u202egnp.exe" display as "exe.png".
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def clean_filename(name: str | None) -> str:
    """A file name fit to show and to send back in a header: its last path segment, without
    control characters, at most MAX_FILENAME characters ("" when nothing is left)."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    kept = "".join(c for c in name if c not in _BIDI_CONTROLS
                   and unicodedata.category(c) not in ("Cc", "Zl", "Zp", "Cs"))
    kept = kept.strip()
    return "" if kept in (".", "..") else kept[:MAX_FILENAME]


def _flock(fd: int, timeout_s: float = 30.0) -> None:
    try:
        flock_waiting(fd, timeout_s)
    except LockTimeout:  # held far longer than a few file operations take
        raise ApiError(503, "this user's files are busy; try again", headers={"Retry-After": "1"}) from None


def fsync_file(path: Path) -> None:
    """Flush a file's bytes to the disk (any descriptor of the file will do)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def examine(temp_path: Path, filename: str) -> dict:
    """The metadata of an upload: its hash and size, its type decided from its bytes (415 if
    unreadable), and its name as the client gave it, cleaned."""
    filename = clean_filename(filename)
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
    # A temp file or a blob without metadata in a user's folder this old is a killed
    # writer's: a live one renames its temp file, or writes the metadata, within moments
    # (other workers keep writing while one starts and sweeps).
    WRITER_LEFTOVER_AGE_S = 600.0
    # How long a file stays marked in use once a send attached it, or a reply or an import
    # stored it: far longer than a turn takes from finding the file to storing the message
    # that names it (lock waits, Gemini calls and all).
    IN_USE_S = 3600.0

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

    @contextlib.contextmanager
    def _owner_locked(self, owner: str):
        """The owner's files lock, across worker processes and the cleanup: an flock on
        `<user>/.lock`. Held only for a few file operations, never while talking to Gemini."""
        folder = self._folder(owner, create=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _flock(fd)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    # -- writing -----------------------------------------------------------------
    def incoming_file(self):
        """Where the multipart parser writes an upload as it arrives."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        return tempfile.NamedTemporaryFile(dir=self.incoming, prefix="up-", delete=False)

    def adopt(self, owner: str, temp_path: Path, filename: str) -> dict:
        """Hash and type an uploaded temp file, then move it into the user's files.

        Its bytes are fsynced before the metadata (size, SHA-256) is written, else a power
        cut could keep the metadata and lose the bytes. The fsync runs on a disk thread
        while this one hashes, so the upload waits for the slower of the two, not both.
        The metadata's write then fsyncs the folder, which makes both renames durable."""
        meta, _ = on_disk_threads([lambda: examine(temp_path, filename),
                                   lambda: fsync_file(temp_path)])
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
        write_atomically(meta_path, orjson.dumps(meta), self._in_use_mark())  # the reply naming it is on its way
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
        existing = self.attach(owner, file_id)  # reused, it is attached as much as a send's file
        if existing is not None:
            if existing.get("sha256") == digest:
                return existing
            file_id = new_id("f")
        meta = {"id": file_id, "filename": clean_filename(record.get("filename")) or file_id,
                "mime_type": mime_type, "size_bytes": len(data), "sha256": digest,
                "created_at": record.get("created_at") or now_iso()}
        self._keep_restored(owner, meta, data)
        return {**meta, "restored": True}

    def _keep_restored(self, owner: str, meta: dict, data: bytes) -> None:
        blob, meta_path = self._paths(owner, meta["id"])
        self._folder(owner, create=True)
        write_atomically(blob, data)
        write_atomically(meta_path, orjson.dumps(meta), self._in_use_mark())  # its conversation comes next

    def set_gemini_ref(self, owner: str, file_id: str, ref: dict | None) -> None:
        """Remember (or forget) this file's upload to the Gemini Files API. Under the owner's
        lock: a removal between reading and writing the metadata would be undone by the write
        (metadata with no bytes)."""
        with self._owner_locked(owner):
            meta = self.get(owner, file_id)
            if meta is None:
                return
            if ref is None:
                meta.pop("gemini", None)
            else:
                meta["gemini"] = ref
            # Keeps a mark of use still ahead: this runs while a turn that attached the file is planned.
            mark = max(time.time_ns(), self._mtime_ns(owner, file_id) or 0)
            write_atomically(self._paths(owner, file_id)[1], orjson.dumps(meta), mark)

    # -- in use, and removal -----------------------------------------------------------
    def attach(self, owner: str, file_id: str) -> dict | None:
        """A file's metadata, for a message about to name it (None if it is not there):
        marks it in use for IN_USE_S, so a cleanup that has not seen the message yet keeps
        the file. Under the owner's lock, so a cleanup's removal comes wholly before (then
        None) or after (then it sees the mark)."""
        try:
            meta_path = self._paths(owner, file_id)[1]
            if not meta_path.parent.is_dir():
                return None
            with self._owner_locked(owner):
                # The mark is the mtime: no rewrite, no fsync (a crash loses no message on its way).
                mark = self._in_use_mark()
                os.utime(meta_path, ns=(mark, mark))
                return self.get(owner, file_id)
        except (FileNotFoundError, InvalidId):
            return None

    def _in_use_mark(self) -> int:
        return time.time_ns() + int(self.IN_USE_S * 1e9)

    def _mtime_ns(self, owner: str, file_id: str) -> int | None:
        try:
            return self._paths(owner, file_id)[1].stat().st_mtime_ns
        except (FileNotFoundError, InvalidId):
            return None

    def last_used(self, owner: str, file_id: str) -> float | None:
        """When the file was last used (Unix time), ahead of now while it is marked in use;
        None if it is not there."""
        mtime_ns = self._mtime_ns(owner, file_id)
        return None if mtime_ns is None else mtime_ns / 1e9

    def remove_if_unused(self, owner: str, file_id: str, since: float) -> bool:
        """Remove the file unless it was used at `since` or later (or is marked in use);
        True if removed. Under the owner's lock: an attach is wholly before (and seen) or
        after (and finds nothing)."""
        with self._owner_locked(owner):
            used = self.last_used(owner, file_id)
            if used is None or used >= since:
                return False
            self._unlink(owner, file_id)
            return True

    def delete(self, owner: str, file_id: str) -> None:
        with self._owner_locked(owner):
            self._unlink(owner, file_id)

    def _unlink(self, owner: str, file_id: str) -> None:
        # The metadata first: once it is gone no one lists or serves the file, and a crash
        # before the bytes go leaves a blob without metadata, which the start-up sweep removes.
        blob, meta_path = self._paths(owner, file_id)
        meta_path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)

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
        """Sweep .incoming if the last sweep is `sweep_every_s` old; called on requests.
        Only .incoming: the users' folders are many, and swept at start."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_every_s
            self._sweep_uploads(self.LEFTOVER_AGE_S)

    def sweep_leftovers(self, older_than_s: float | None = None) -> None:
        """At start: remove what killed writers left, older than `older_than_s` (by default
        LEFTOVER_AGE_S in .incoming, WRITER_LEFTOVER_AGE_S in the users' folders): uploads
        in .incoming; in each user's folder, write_atomically()'s temp files and blobs whose
        metadata was never written."""
        self._sweep_uploads(self.LEFTOVER_AGE_S if older_than_s is None else older_than_s)
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():  # the folders on this disk (a database store has none but .incoming)
            if folder.is_dir() and not folder.name.startswith("."):
                self._sweep_user_folder(folder, self.WRITER_LEFTOVER_AGE_S if older_than_s is None else older_than_s)

    def _sweep_uploads(self, older_than_s: float) -> None:
        if self.incoming.is_dir():
            _remove_older(self.incoming.iterdir(), time.time() - older_than_s)

    @staticmethod
    def _sweep_user_folder(folder: Path, older_than_s: float) -> None:
        # One listing: a folder holds thousands of files, and only leftovers are stat'ed.
        names = os.listdir(folder)
        described = {name.removesuffix(".json") for name in names if name.endswith(".json")}
        temps = [name for name in names if name.startswith(TEMP_PREFIX)]
        orphans = [name for name in names if name.endswith(".bin") and not name.startswith(".")
                   and name.removesuffix(".bin") not in described]
        _remove_older((folder / name for name in temps + orphans), time.time() - older_than_s)


def _remove_older(paths, cutoff: float) -> None:
    """Remove those of `paths` last modified before `cutoff` (Unix time)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
