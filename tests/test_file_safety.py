"""Stored files against crashes, power cuts, a cleanup running beside the servers, and odd names.

Crash points are real: a process uploading a file is killed (SIGKILL) at the moment
named, then the server starts again on the same data folder. The cleanup runs as its
command does, with a send or an import arriving while it has read the conversations
and not yet removed anything.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone

import orjson
import pytest

import apsara.files as files_module
from apsara import cleanup, create_app
from apsara.testing.fake_gemini import Reply
from tests.conftest import make_settings
from tests.postgres import server_env
from tests.test_files import FILES, png_bytes, upload

API = "/api/v1/conversations"
DAY_S = 86400
UNREFERENCED = cleanup.unreferenced


def _blob_and_meta(settings, owner: str, file_id: str):
    folder = settings.data_dir / "files" / owner
    return folder / f"{file_id}.bin", folder / f"{file_id}.json"


def _age(path, seconds: float) -> None:
    """Make a file look `seconds` old."""
    then = time.time() - seconds
    os.utime(path, (then, then))


# -- an upload's bytes reach the disk before the metadata that vouches for them ----------

def test_an_uploads_bytes_are_fsynced_before_it_is_moved_into_place(client, settings, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(source, target, *args, **kwargs):
        events.append(("replace", str(source), str(target)))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    response = upload(client, png_bytes() * 50, "pic.png")
    assert response.status_code == 201, response.json
    blob, _ = _blob_and_meta(settings, "local", response.json["id"])
    moved = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(blob))
    temp_path = events[moved][1]
    assert ("fsync", temp_path) in events[:moved], "the bytes were moved into place without an fsync"
    assert ("fsync", str(blob.parent)) in events[moved:], "the folder was not fsynced after the move"
    assert blob.read_bytes() == png_bytes() * 50


# -- what a killed writer leaves is swept at the next start ------------------------------

def _upload_killed(tmp_path, die_when) -> None:
    """Upload a picture in a child process that kills itself (SIGKILL) where `die_when`
    patches it to; the parent checks it really died so."""
    pid = os.fork()
    if pid == 0:
        try:
            client = create_app(make_settings(tmp_path)).test_client()
            die_when(lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL))
            upload(client, png_bytes() * 500, "pic.png")
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_temp_files_of_a_writer_killed_mid_write_are_swept_at_start(tmp_path):
    real_replace = os.replace

    def die_on_metadata_rename(die):
        def replace(source, target, *args, **kwargs):
            if str(target).endswith(".json"):
                die()
            return real_replace(source, target, *args, **kwargs)
        os.replace = replace

    _upload_killed(tmp_path, die_on_metadata_rename)
    folder = tmp_path / "data" / "files" / "local"
    left = list(folder.glob(".tmp-*"))
    assert len(left) == 1 and left[0].stat().st_size > 0  # the metadata's temp file, written, never renamed
    _age(left[0], 11 * 60)
    in_progress = folder / ".tmp-another-workers-write.json"  # another worker, writing now
    in_progress.write_bytes(b"{}")
    create_app(make_settings(tmp_path))  # a restart
    assert not left[0].exists()
    assert in_progress.exists()


def test_a_blob_whose_metadata_never_came_is_swept_at_start(tmp_path):
    def die_on_metadata(die):
        files_module.write_atomically = lambda target, data, mtime_ns=None: die()

    _upload_killed(tmp_path, die_on_metadata)
    folder = tmp_path / "data" / "files" / "local"
    orphans = list(folder.glob("*.bin"))
    assert len(orphans) == 1 and not list(folder.glob("*.json"))
    fresh = folder / "fRightNowWriting0.bin"  # another worker, between its two renames
    fresh.write_bytes(png_bytes())
    create_app(make_settings(tmp_path))
    assert orphans[0].exists() and fresh.exists()  # too young to tell from a live writer's
    _age(orphans[0], 11 * 60)
    app = create_app(make_settings(tmp_path))
    assert not orphans[0].exists() and fresh.exists()
    assert app.extensions["apsara"].files.ids("local") == []


# -- the cleanup never removes a file attached while it runs ----------------------------

@pytest.fixture
def cleanup_env(monkeypatch, settings):
    """`python -m apsara.cleanup` reads its settings from the environment, as the servers do."""
    monkeypatch.setenv("APSARA_DATA_DIR", str(settings.data_dir))
    for name, value in server_env().items():
        monkeypatch.setenv(name, value)


def _old_upload(chat, settings) -> str:
    """A file uploaded two days ago, named by no message."""
    file_id = upload(chat, png_bytes(), "old.png").json["id"]
    _two_days_old(chat, settings, file_id)
    return file_id


def _two_days_old(chat, settings, file_id: str) -> None:
    """The file's metadata as if stored, and last used, two days ago."""
    files = chat.application.extensions["apsara"].files
    then = datetime.now(timezone.utc) - timedelta(days=2)
    if hasattr(files, "db"):  # the database store: its metadata row
        with files.db.transaction() as conn:
            row = conn.execute("SELECT meta FROM files WHERE owner = 'local' AND id = %s", (file_id,)).fetchone()
            meta = orjson.loads(row[0])
            meta.pop("used_until", None)
            meta["created_at"] = then.isoformat().replace("+00:00", "Z")
            conn.execute("UPDATE files SET meta = %s WHERE owner = 'local' AND id = %s",
                         (orjson.dumps(meta), file_id))
        return
    meta_path = _blob_and_meta(settings, "local", file_id)[1]
    meta = orjson.loads(meta_path.read_bytes())
    meta["created_at"] = then.isoformat().replace("+00:00", "Z")
    meta_path.write_bytes(orjson.dumps(meta))
    _age(meta_path, 2 * DAY_S)


def _meanwhile(monkeypatch, action) -> None:
    """Run `action` once the cleanup has read every conversation, before it removes anything."""
    real = cleanup.unreferenced

    def unreferenced(*args, **kwargs):
        found = real(*args, **kwargs)
        action(found)
        return found

    monkeypatch.setattr(cleanup, "unreferenced", unreferenced)


@pytest.mark.usefixtures("store_kind")
def test_cleanup_keeps_a_file_a_send_attaches_while_it_runs(chat, fake, settings, monkeypatch, cleanup_env):
    file_id = _old_upload(chat, settings)
    assert chat.post(API, json={"id": "c1"}).status_code == 201

    def send(found):
        assert ("local", file_id) in found  # unreferenced when the cleanup looked
        fake.push(Reply(parts=["a red square"]))
        sent = chat.post(f"{API}/c1/messages", json={"text": "look", "files": [file_id]})
        assert sent.status_code == 201, sent.json

    _meanwhile(monkeypatch, send)
    assert cleanup.main(["--grace-hours", "24"]) == 0
    assert chat.get(f"{FILES}/{file_id}").status_code == 200
    assert chat.get(f"{FILES}/{file_id}/content").data == png_bytes()
    # The next run sees the message naming it, long after the send's mark has passed.
    monkeypatch.setattr(cleanup, "unreferenced", UNREFERENCED)
    _two_days_old(chat, settings, file_id)
    assert cleanup.main(["--grace-hours", "24"]) == 0
    assert chat.get(f"{FILES}/{file_id}").status_code == 200


@pytest.mark.usefixtures("store_kind")
def test_cleanup_still_removes_an_old_unattached_file(chat, settings, cleanup_env):
    file_id = _old_upload(chat, settings)
    assert cleanup.main(["--grace-hours", "24"]) == 0
    assert chat.get(f"{FILES}/{file_id}").status_code == 404
    assert not any(path.exists() for path in _blob_and_meta(settings, "local", file_id))


@pytest.mark.usefixtures("store_kind")
def test_cleanup_keeps_a_file_an_import_reuses_while_it_runs(chat, fake, settings, monkeypatch, cleanup_env):
    file_id = upload(chat, png_bytes(), "red.png").json["id"]
    chat.post(API, json={"id": "c1"})
    fake.push(Reply(parts=["red"]))
    assert chat.post(f"{API}/c1/messages", json={"text": "look", "files": [file_id]}).status_code == 201
    export = chat.get(f"{API}/c1/export?files=inline").json
    assert chat.delete(f"{API}/c1").status_code in (200, 204)
    _two_days_old(chat, settings, file_id)

    def import_it(found):
        assert ("local", file_id) in found
        imported = chat.post(f"{API}/import", json=export)
        assert imported.status_code == 201, imported.json

    _meanwhile(monkeypatch, import_it)
    assert cleanup.main(["--grace-hours", "24"]) == 0
    restored = chat.get(f"{API}/c1").json["messages"][0]
    assert [p["file_id"] for p in restored["parts"] if p["type"] == "file"] == [file_id]  # the same bytes, reused
    assert chat.get(f"{FILES}/{file_id}/content").data == png_bytes()


def test_a_removal_never_brings_back_metadata_through_a_gemini_reference(chat, settings, monkeypatch):
    """A turn records the file's Files API upload while the cleanup (or an import's undo)
    removes the file: the metadata must not come back without its bytes."""
    file_id = upload(chat, png_bytes(), "red.png").json["id"]
    files = chat.application.extensions["apsara"].files
    read, resume = threading.Event(), threading.Event()
    real_write = files_module.write_atomically

    def slow_write(target, data, mtime_ns=None):  # the metadata read, not yet written back
        read.set()
        assert resume.wait(10)
        return real_write(target, data, mtime_ns)

    monkeypatch.setattr(files_module, "write_atomically", slow_write)
    recorder = threading.Thread(target=files.set_gemini_ref,
                                args=("local", file_id, {"uri": "https://files.example/abc", "mime_type": "image/png"}))
    recorder.start()
    assert read.wait(10)
    remover = threading.Thread(target=files.delete, args=("local", file_id))
    remover.start()
    remover.join(0.3)  # the removal goes as far as it may while the reference is being written
    resume.set()
    recorder.join(10)
    remover.join(10)
    blob, meta = _blob_and_meta(settings, "local", file_id)
    assert not meta.exists() and not blob.exists()
    assert chat.get(f"{FILES}/{file_id}").status_code == 404


# -- odd file names ----------------------------------------------------------------------

@pytest.mark.parametrize(("sent", "kept"), [
    ("a\x00b.txt", "ab.txt"),
    ("tab\there\x7f.txt", "tabhere.txt"),
    ("\u202egnp.exe.txt", "gnp.exe.txt"),  # no right-to-left override to disguise the type
    ("..", None),
    ("r\u00e9sum\u00e9.txt", "r\u00e9sum\u00e9.txt"),
])
def test_upload_names_lose_control_characters(client, sent, kept):
    response = upload(client, b"hello text", sent)
    assert response.status_code == 201, response.json
    assert response.json["filename"] == (kept or response.json["id"])
    content = client.get(f"{FILES}/{response.json['id']}/content")
    assert content.status_code == 200
    assert not any(ord(c) < 32 or ord(c) == 127 for c in content.headers["Content-Disposition"])


def test_an_imported_files_name_loses_control_characters(chat, fake):
    file_id = upload(chat, png_bytes(), "red.png").json["id"]
    chat.post(API, json={"id": "c1"})
    fake.push(Reply(parts=["red"]))
    chat.post(f"{API}/c1/messages", json={"text": "look", "files": [file_id]})
    export = chat.get(f"{API}/c1/export?files=inline").json
    export["files"][0].update(id="fOtherIdHere0000", filename="x\x00y\r\n.png")
    export["messages"][0]["parts"][1]["file_id"] = "fOtherIdHere0000"
    export["conversation"]["id"] = "c2"
    imported = chat.post(f"{API}/import", json=export)
    assert imported.status_code == 201, imported.json
    assert chat.get(f"{FILES}/fOtherIdHere0000").json["filename"] == "xy.png"


@pytest.mark.slow
def test_odd_names_download_under_gunicorn(tmp_path):
    """Gunicorn refuses to send a header with a control character (500): names cleaned at
    upload, and names stored before names were cleaned, must both download."""
    import http.client
    from urllib.parse import urlsplit

    from tests.servers import gunicorn

    data = tmp_path / "data"
    key = {"Authorization": "Bearer key-a"}
    with gunicorn({"APSARA_DATA_DIR": str(data), "APSARA_API_KEYS": "alice:key-a"}, workers=1) as base:
        url = urlsplit(base)

        def request(method, path, body=None, headers=None):
            connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            connection.request(method, path, body=body, headers={**key, **(headers or {})})
            response = connection.getresponse()
            answer = (response.status, response.getheader("Content-Disposition"), response.read())
            connection.close()
            return answer

        body = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="a\x00b.txt"\r\n\r\n'
                b"hello text\r\n--B--\r\n")
        status, _, raw = request("POST", FILES, body, {"Content-Type": "multipart/form-data; boundary=B"})
        assert status == 201, raw
        uploaded = orjson.loads(raw)
        assert uploaded["filename"] == "ab.txt"
        status, disposition, content = request("GET", f"{FILES}/{uploaded['id']}/content")
        assert (status, disposition, content) == (200, 'inline; filename=ab.txt', b"hello text")

        # Stored as an older version stored names: control characters and all.
        meta_path = data / "files" / "alice" / f"{uploaded['id']}.json"
        meta = orjson.loads(meta_path.read_bytes())
        meta["filename"] = "r\u00e9sum\u00e9\x00\r\n.txt"
        meta_path.write_bytes(orjson.dumps(meta))
        status, disposition, content = request("GET", f"{FILES}/{uploaded['id']}/content")
        assert status == 200 and content == b"hello text"
        assert disposition == "inline; filename=resume.txt; filename*=UTF-8''r%C3%A9sum%C3%A9.txt"

