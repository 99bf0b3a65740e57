"""Files: upload with type sniffing, limits, isolation, signed URLs, attachments to turns."""
from __future__ import annotations

import base64
import io
import os
import struct
import time
import zlib
from datetime import datetime, timedelta, timezone

import pytest

from apsara import create_app
from tests.conftest import make_settings
from tests.postgres import server_env

# Every test here runs on both stores: the files and PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_kind")

FILES = "/api/v1/files"
API = "/api/v1/conversations"


def png_bytes(width=2, height=2, color=(255, 0, 0)) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes(color) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 56 + b"\x90" * 200
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 100


def upload(client, data: bytes, name: str, **kwargs):
    return client.post(FILES, data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data", **kwargs)


@pytest.mark.parametrize("data, name, mime", [
    (png_bytes(), "picture.txt", "image/png"),
    (png_bytes(), "noextension", "image/png"),
    (PDF, "paper.pdf", "application/pdf"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 50, "x.bin", "image/jpeg"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * 40, "sound", "audio/wav"),
    (MP4, "clip.mov", "video/mp4"),
    ("héllo wörld\n".encode(), "notes.txt", "text/plain"),
    (b"a,b\n1,2\n", "table.csv", "text/csv"),
    (b"print('hi')\n", "script.py", "text/x-python"),
    (b"<!DOCTYPE html><html><script>alert(1)</script></html>", "page.txt", "text/html"),
])
def test_type_is_decided_by_the_bytes(client, data, name, mime):
    response = upload(client, data, name)
    assert response.status_code == 201, response.json
    meta = response.json
    assert meta["mime_type"] == mime and meta["filename"] == name
    assert meta["size_bytes"] == len(data)
    import hashlib
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert client.get(f"{FILES}/{meta['id']}").json["mime_type"] == mime


@pytest.mark.parametrize("data, name", [(ELF, "cat.png"), (b"MZ\x90\x00" + b"\x00" * 100, "doc.pdf"),
                                        (b"\x00\x01\x02\x03binary", "data.txt"), (b"", "empty.txt")])
def test_unreadable_types_are_415_and_nothing_kept(client, settings, data, name):
    response = upload(client, data, name)
    assert response.status_code == 415 and response.json["error"]["status"] == "UNSUPPORTED_MEDIA_TYPE"
    leftovers = [p for p in (settings.data_dir / "files").rglob("*") if p.is_file()]
    assert leftovers == []


def test_upload_needs_the_file_field(client):
    response = client.post(FILES, data={"other": (io.BytesIO(b"x"), "a.txt")}, content_type="multipart/form-data")
    assert response.status_code == 422 and "file" in response.json["error"]["details"]


def test_size_limit_is_413(tmp_path):
    app = create_app(make_settings(tmp_path, max_upload_mb=1))
    response = upload(app.test_client(), b"a" * (2 * 1024 * 1024), "big.txt")
    assert response.status_code == 413 and response.json["error"]["status"] == "PAYLOAD_TOO_LARGE"
    assert [p for p in (tmp_path / "data" / "files").rglob("*") if p.is_file()] == []


def test_content_is_served_safely(client):
    image = upload(client, png_bytes(), "red.png").json
    response = client.get(f"{FILES}/{image['id']}/content")
    assert response.status_code == 200 and response.data == png_bytes()
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Disposition"].startswith("inline")
    page = upload(client, b"<html><script>alert(1)</script></html>", "evil.html").json
    served = client.get(f"{FILES}/{page['id']}/content")
    assert served.headers["Content-Disposition"].startswith("attachment")
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in served.headers["Content-Security-Policy"]
    svg = upload(client, b'<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>', "x.svg").json
    assert client.get(f"{FILES}/{svg['id']}/content").headers["Content-Disposition"].startswith("attachment")


def test_signed_urls(users):
    alice, nobody = users["alice"], users["nobody"]
    meta = upload(alice, png_bytes(), "a.png").json
    url = meta["url"]
    assert "signature=" in url and "expires=" in url
    assert nobody.get(url).status_code == 200  # no Bearer header needed
    assert nobody.get(url).data == png_bytes()
    tampered = url.replace("signature=", "signature=0")
    assert nobody.get(tampered).status_code == 401
    other_user = url.replace("user=alice", "user=bob")
    assert nobody.get(other_user).status_code == 401
    assert nobody.get(f"{FILES}/{meta['id']}/content").status_code == 401
    app = users["app"]
    files = app.extensions["apsara"].files
    past = int(time.time()) - 10
    expired = (f"{FILES}/{meta['id']}/content?user=alice&expires={past}"
               f"&signature={files._signature('alice', meta['id'], past)}")
    assert nobody.get(expired).status_code == 401


def test_files_belong_to_their_user(users):
    meta = upload(users["alice"], png_bytes(), "a.png").json
    bob = users["bob"]
    assert bob.get(f"{FILES}/{meta['id']}").status_code == 404
    assert bob.get(f"{FILES}/{meta['id']}/content").status_code == 404
    bob.post(API, json={"id": "c1"})
    assert bob.post(f"{API}/c1/messages", json={"text": "see", "files": [meta["id"]]}).status_code in (404, 503)


# -- files in turns ------------------------------------------------------------------
def test_image_goes_inline_with_the_question(chat, fake):
    image = upload(chat, png_bytes(), "red.png").json
    chat.post(API, json={"id": "c1"})
    result = chat.post(f"{API}/c1/messages", json={"text": "What colour?", "files": [image["id"]]})
    assert result.status_code == 201
    parts = fake.last_body()["contents"][0]["parts"]
    assert parts[0] == {"text": "What colour?"}
    inline = parts[1].get("inlineData") or parts[1].get("inline_data")
    assert base64.b64decode(inline["data"]) == png_bytes()
    assert (inline.get("mimeType") or inline.get("mime_type")) == "image/png"
    stored = result.json["user_message"]["parts"][1]
    assert stored["type"] == "file" and stored["file_id"] == image["id"] and stored["mime_type"] == "image/png"
    assert chat.get(stored["url"]).data == png_bytes()


def test_pdf_question(chat, fake):
    pdf = upload(chat, PDF, "paper.pdf").json
    chat.post(API, json={"id": "c1"})
    chat.post(f"{API}/c1/messages", json={"text": "Summarise", "files": [pdf["id"]]})
    part = fake.last_body()["contents"][0]["parts"][1]
    inline = part.get("inlineData") or part.get("inline_data")
    assert (inline.get("mimeType") or inline.get("mime_type")) == "application/pdf"


def uploads_made(fake):
    return [r for r in fake.requests if r["path"].startswith("/upload/")]


def file_refs(body):
    return [(p.get("fileData") or p.get("file_data")) for c in body["contents"] for p in c["parts"]
            if "fileData" in p or "file_data" in p]


def test_files_of_earlier_turns_go_through_the_files_api_once(chat, fake):
    image = upload(chat, png_bytes(), "red.png").json
    chat.post(API, json={"id": "c1"})
    chat.post(f"{API}/c1/messages", json={"text": "Look", "files": [image["id"]]})
    assert uploads_made(fake) == []  # inline the first time
    chat.post(f"{API}/c1/messages", json={"text": "And now?"})
    assert len(uploads_made(fake)) == 1
    [ref] = file_refs(fake.last_body())
    [name] = fake.files
    assert (ref.get("file_uri") or ref.get("fileUri")).endswith(name)
    assert fake.files[name]["bytes"] == png_bytes() and fake.files[name]["mime_type"] == "image/png"
    chat.post(f"{API}/c1/messages", json={"text": "Still there?"})
    assert len(uploads_made(fake)) == 1  # reused while it lives


def test_expired_upload_is_redone_and_the_turn_retried(chat, fake):
    image = upload(chat, png_bytes(), "red.png").json
    chat.post(API, json={"id": "c1"})
    chat.post(f"{API}/c1/messages", json={"text": "Look", "files": [image["id"]]})
    chat.post(f"{API}/c1/messages", json={"text": "Again"})
    assert len(uploads_made(fake)) == 1
    fake.expire_files()  # Gemini forgot it, though our record says it is alive
    response = chat.post(f"{API}/c1/messages", json={"text": "Third"})
    assert response.status_code == 201, response.json
    assert len(uploads_made(fake)) == 2
    generate_codes = [r for r in fake.generate_requests()]
    assert len(generate_codes) == 4  # the refused call, then the retry


def test_our_own_expiry_record_triggers_a_new_upload(chat_app, chat, fake):
    image = upload(chat, png_bytes(), "red.png").json
    chat.post(API, json={"id": "c1"})
    chat.post(f"{API}/c1/messages", json={"text": "Look", "files": [image["id"]]})
    chat.post(f"{API}/c1/messages", json={"text": "Again"})
    files = chat_app.extensions["apsara"].files
    ref = files.get("local", image["id"])["gemini"]
    files.set_gemini_ref("local", image["id"], {**ref, "expires_at": (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()})
    chat.post(f"{API}/c1/messages", json={"text": "Third"})
    assert len(uploads_made(fake)) == 2
    assert len(fake.generate_requests()) == 3  # no refused call: we knew it had expired


def test_large_file_goes_through_the_files_api_at_once(chat, fake):
    big = upload(chat, b"word " * (2 * 1024 * 1024), "big.txt").json  # 10 MB of text
    chat.post(API, json={"id": "c1"})
    assert chat.post(f"{API}/c1/messages", json={"text": "Read", "files": [big["id"]]}).status_code == 201
    assert len(uploads_made(fake)) == 1 and len(file_refs(fake.last_body())) == 1


def test_a_file_the_model_cannot_read_is_422(chat, fake):
    video = upload(chat, MP4, "clip.mp4").json
    chat.post(API, json={"id": "c1", "model": "gemini-3.1-flash-image"})
    response = chat.post(f"{API}/c1/messages", json={"text": "Describe", "files": [video["id"]]})
    assert response.status_code == 422
    assert "video" in response.json["error"]["message"] and "gemini-3.8-flash" in response.json["error"]["message"]
    assert chat.get(f"{API}/c1").json["messages"] == []
    assert fake.generate_requests() == []


def test_unknown_file_is_404(chat):
    chat.post(API, json={"id": "c1"})
    assert chat.post(f"{API}/c1/messages", json={"text": "x", "files": ["fNOPE"]}).status_code == 404


def test_edit_keeps_or_drops_files(chat, fake):
    image = upload(chat, png_bytes(), "red.png").json
    chat.post(API, json={"id": "c1"})
    first = chat.post(f"{API}/c1/messages", json={"text": "Look", "files": [image["id"]]}).json["user_message"]
    kept = chat.put(f"{API}/c1/messages/{first['id']}", json={"text": "Look again"}).json["user_message"]
    assert [p["type"] for p in kept["parts"]] == ["text", "file"]
    dropped = chat.put(f"{API}/c1/messages/{first['id']}", json={"files": []}).json["user_message"]
    assert [p["type"] for p in dropped["parts"]] == ["text"] and dropped["text"] == "Look"
    empty = chat.put(f"{API}/c1/messages/{first['id']}", json={"text": "", "files": []})
    assert empty.status_code == 422


def test_cleanup_removes_only_unreferenced_files(chat_app, chat, fake, monkeypatch, settings):
    from apsara import cleanup

    used = upload(chat, png_bytes(), "used.png").json
    unused = upload(chat, PDF, "unused.pdf").json
    chat.post(API, json={"id": "c1"})
    chat.post(f"{API}/c1/messages", json={"text": "Look", "files": [used["id"]]})
    chat.delete(f"{API}/c1")  # deleting a conversation leaves files
    assert chat.get(f"{FILES}/{used['id']}").status_code == 200
    chat.post(API, json={"id": "c2"})
    chat.post(f"{API}/c2/messages", json={"text": "Look", "files": [used["id"]]})
    monkeypatch.setenv("APSARA_DATA_DIR", str(settings.data_dir))
    for name, value in server_env().items():
        monkeypatch.setenv(name, value)
    assert cleanup.main(["--grace-hours", "0"]) == 0
    assert chat.get(f"{FILES}/{used['id']}").status_code == 200
    assert chat.get(f"{FILES}/{unused['id']}").status_code == 404


def test_upload_path_is_in_the_openapi_document(client):
    spec = client.get("/api/v1/openapi.json").json
    assert {"/api/v1/files", "/api/v1/files/{file_id}", "/api/v1/files/{file_id}/content"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/api/v1/files"]["post"]["requestBody"]["content"]


def test_a_picture_of_random_bytes_reaches_gemini_whole(chat, fake):
    """The SDK sends inline data in URL-safe base64; real pictures have bytes that need `-` and `_`."""
    import os

    picture = png_bytes() + os.urandom(3000)  # a PNG header, then bytes like any photo's
    image = upload(chat, picture, "photo.png").json
    chat.post(API, json={"id": "c1"})
    result = chat.post(f"{API}/c1/messages", json={"text": "What is this?", "files": [image["id"]]})
    assert result.status_code == 201, result.json
    part = fake.last_body()["contents"][0]["parts"][1]
    sent = (part.get("inlineData") or part.get("inline_data"))["data"]
    assert set(sent) & set("-_"), "the encoding should use the URL-safe characters"
    assert base64.urlsafe_b64decode(sent + "=" * (-len(sent) % 4)) == picture


@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode,
                                    lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=")])
def test_the_fake_reads_both_base64_alphabets(encode):
    import os

    from apsara.testing.fake_gemini import inline_bytes

    raw = os.urandom(1001)
    assert inline_bytes(encode(raw).decode()) == raw


def test_downloads_are_never_kept_by_shared_caches(users):
    alice, nobody = users["alice"], users["nobody"]
    meta = upload(alice, png_bytes(), "a.png").json
    for response in (alice.get(f"{FILES}/{meta['id']}/content"), nobody.get(meta["url"])):
        assert response.status_code == 200
        cache = response.cache_control
        assert cache.private and not cache.public and cache.max_age == 300
        assert "Authorization" in response.vary


def test_downloads_answer_ranges_and_revalidation(users):
    alice = users["alice"]
    data = MP4 + os.urandom(2_500_000)  # past the database's first 1 MB chunks
    meta = upload(alice, data, "clip.mp4").json
    url = f"{FILES}/{meta['id']}/content"
    whole = alice.get(url)
    assert whole.status_code == 200 and whole.data == data and whole.headers["Accept-Ranges"] == "bytes"
    piece = alice.get(url, headers={"Range": "bytes=1048570-2097160"})
    assert piece.status_code == 206 and piece.data == data[1048570:2097161]
    assert piece.headers["Content-Range"] == f"bytes 1048570-2097160/{len(data)}"
    tail = alice.get(url, headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.data == data[-100:]
    beyond = alice.get(url, headers={"Range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(data)}"
    assert beyond.json["error"]["code"] == 416
    # not a range, or several (one range is served): ignored, the whole file
    for malformed in ("bytes=abc", "bytes=5-1", "pages=1-2", "bytes=0-1,3-4"):
        ignored = alice.get(url, headers={"Range": malformed})
        assert ignored.status_code == 200 and ignored.data == data, malformed
    assert alice.get(url, headers={"If-None-Match": whole.headers["ETag"]}).status_code == 304


def test_file_urls_are_absolute_behind_a_public_url(tmp_path):
    from apsara.config import from_env

    settings = from_env({"APSARA_DATA_DIR": str(tmp_path / "data"),
                         "APSARA_PUBLIC_URL": "https://api.example.com/apsara/"})
    client = create_app(settings).test_client()
    meta = upload(client, PDF, "paper.pdf").json
    assert meta["url"].startswith("https://api.example.com/apsara/api/v1/files/")
    path = meta["url"].removeprefix("https://api.example.com/apsara")
    assert client.get(path).data == PDF  # what the proxy forwards, without its prefix


@pytest.mark.parametrize("bad", ["api.example.com", "ftp://x", "https://x/?a=1", "https://"])
def test_a_bad_public_url_is_refused_at_start(bad):
    from apsara.config import ConfigError, from_env

    with pytest.raises(ConfigError, match="APSARA_PUBLIC_URL"):
        from_env({"APSARA_PUBLIC_URL": bad})
