"""Bodies and ids an attacker would send: a clear 4xx with the envelope, and nothing changed.

JSON that is not JSON, nested too deep or not valid Unicode is refused with 400
before anything reads it; too large is 413 (with a length or chunked); bounds
on a response schema are 422; uploads never leave a temp file behind.
"""
from __future__ import annotations

import io
import os
import time

import pytest

from apsara import create_app
from tests.conftest import make_settings, parse_sse

API = "/api/v1/conversations"
FILES = "/api/v1/files"
DEEP = "[" * 965 + "]" * 965


def envelope(response, code: int) -> dict:
    assert response.status_code == code, response.get_data(as_text=True)[:300]
    error = response.json["error"]
    assert error["code"] == code and error["message"] and isinstance(error["details"], dict)
    return error


def raw_json(client, method: str, path: str, text: str, **kwargs):
    return client.open(path, method=method, data=text.encode("utf-8"), content_type="application/json", **kwargs)


def incoming(settings) -> list:
    folder = settings.data_dir / "files" / ".incoming"
    return sorted(folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def conversation(chat):
    assert chat.post(API, json={"id": "c1", "title": "Kept"}).status_code == 201
    reply = chat.post(f"{API}/c1/messages", json={"text": "hi"}).json
    return {"user": reply["user_message"]["id"], "reply": reply["reply"]["id"]}


def every_json_endpoint(ids):
    return [("POST", API), ("PATCH", f"{API}/c1"), ("POST", f"{API}/c1/messages"),
            ("PUT", f"{API}/c1/messages/{ids['user']}"), ("POST", f"{API}/c1/messages/{ids['reply']}/regenerate"),
            ("POST", "/api/v1/generate"), ("POST", "/api/v1/route")]


def snapshot(chat_app) -> dict:
    root = chat_app.extensions["apsara"].settings.data_dir / "history"
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


# -- bodies that cannot be read ----------------------------------------------------------------
@pytest.mark.parametrize("body, says", [
    ('{"text": ' + DEEP + "}", "nested deeper than 64"),
    ('{"text": "\\ud800"}', "lone surrogate"),
    ('{"text": "a\\udfffb", "settings": {}}', "lone surrogate"),
    ('{"\\ud800": 1}', "lone surrogate"),
    ('{"text": ', "not valid JSON"),
    ('{"text": NaN}', "not valid JSON"),
    ("   ", "not valid JSON"),
])
def test_unreadable_json_is_400_on_every_json_endpoint_and_changes_nothing(chat, chat_app, conversation,
                                                                           body, says):
    before = snapshot(chat_app)
    for method, path in every_json_endpoint(conversation):
        error = envelope(raw_json(chat, method, path, body), 400)
        assert error["status"] == "INVALID_ARGUMENT" and says in error["message"], (path, error)
        assert "browser (or proxy)" not in error["message"]
    assert snapshot(chat_app) == before


def test_nesting_up_to_64_levels_is_read(chat):
    # 64 levels: the body, settings, the schema, then 61 more; refused by the schema's own bound, not as unreadable.
    schema = "{" + '"type": "array", "items": {' * 30 + '"type": "string"' + "}" * 30 + "}"
    response = raw_json(chat, "POST", API, '{"settings": {"response_mime_type": "application/json", '
                                           f'"response_schema": {schema}}}}}')
    assert response.status_code == 201, response.json


def test_a_chunked_request_with_no_body_is_not_refused(client):
    response = client.post(f"{API}/nope/messages/m1/select", input_stream=io.BytesIO(b""),
                           headers={"Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})
    envelope(response, 404)


def test_invalid_utf8_body_is_400(chat):
    response = chat.post(API, data=b'{"title": "\xff\xfe"}', content_type="application/json")
    assert envelope(response, 400)["status"] == "INVALID_ARGUMENT"


def test_a_lone_surrogate_never_cuts_a_generate_stream(chat, fake):
    response = raw_json(chat, "POST", "/api/v1/generate", '{"text": "hi \\ud800 there", "stream": true}')
    envelope(response, 400)
    assert fake.generate_requests() == []
    # A valid surrogate pair is fine, and streams to its end.
    response = raw_json(chat, "POST", "/api/v1/generate", '{"text": "hi \\ud83d\\ude00", "stream": true}')
    events, _ = parse_sse(response.get_data(as_text=True))
    assert events[-1][0] == "done" and "\U0001F600" in events[-1][2]["text"]


def test_a_lone_surrogate_echoed_in_an_error_does_not_break_the_handler(client):
    # Query strings and paths are decoded with replacement, so only a crafted message could carry
    # one; the envelope still writes it.
    from apsara.errors import ApiError

    body = ApiError(422, "bad \ud800 value", {"x\udc00": ["no \ud800"]}).to_dict()
    import orjson

    assert b"bad ? value" in orjson.dumps(body)
    envelope(client.get("/api/v1/conversations?cursor=%ED%A0%80"), 422)
    envelope(client.get("/api/v1/conversations/%ED%A0%80"), 404)


def test_chunked_json_body_over_the_limit_is_413(tmp_path):
    app = create_app(make_settings(tmp_path, max_upload_mb=1))
    client = app.test_client()
    body = b'{"title": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    response = client.post(API, input_stream=io.BytesIO(body), content_type="application/json",
                           headers={"Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
    assert envelope(response, 413)["status"] == "PAYLOAD_TOO_LARGE"
    assert client.get(API).json["conversations"] == []


# -- ids and response schemas ------------------------------------------------------------------
def test_id_with_a_trailing_newline_is_422(client, settings):
    error = envelope(client.post(API, json={"id": "nl-1\n"}), 422)
    assert "id" in error["details"]
    envelope(client.get(f"{API}/nl-1%0A"), 404)
    assert not (settings.data_dir / "history" / "local").exists() or \
        list((settings.data_dir / "history" / "local").iterdir()) == []


def deep_schema(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.parametrize("schema, says", [
    (deep_schema(40), "deeper than 32"),  # 41 levels: under the body's 64, over the schema's 32
    ({"type": "object", "properties": {f"field_{n}": {"type": "string", "description": "x" * 200}
                                       for n in range(200)}}, "Larger than"),
])
def test_response_schema_is_bounded_on_create_and_patch(client, settings, schema, says):
    body = {"settings": {"response_mime_type": "application/json", "response_schema": schema}}
    error = envelope(client.post(API, json={"id": "s1", **body}), 422)
    assert says in error["details"]["settings.response_schema"][0]
    assert client.post(API, json={"id": "s2"}).status_code == 201
    error = envelope(client.patch(f"{API}/s2", json=body), 422)
    assert says in error["details"]["settings.response_schema"][0]
    assert client.get(f"{API}/s2").json["settings"] == {}
    assert [c["id"] for c in client.get(API).json["conversations"]] == ["s2"]


def test_wrong_message_kind_messages_read_well(chat, conversation):
    edit = chat.put(f"{API}/c1/messages/{conversation['reply']}", json={"text": "x"})
    assert "can be edited" in envelope(edit, 422)["message"]
    regenerate = chat.post(f"{API}/c1/messages/{conversation['user']}/regenerate", json={})
    message = envelope(regenerate, 422)["message"]
    assert "can be regenerated" in message and "regenerateed" not in message


# -- uploads never leave temp files ------------------------------------------------------------
def multipart(parts: list[tuple[str, str, bytes]], boundary: str = "XyZ") -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_chunked_upload_over_the_limit_is_413_and_leaves_nothing(tmp_path):
    settings = make_settings(tmp_path, max_upload_mb=1)
    client = create_app(settings).test_client()
    body = multipart([("file", "big.txt", b"a" * (3 * 1024 * 1024))])
    response = client.post(FILES, input_stream=io.BytesIO(body), content_type="multipart/form-data; boundary=XyZ",
                           headers={"Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
    envelope(response, 413)
    assert incoming(settings) == []
    assert [p for p in (tmp_path / "data" / "files").rglob("*") if p.is_file()] == []


def test_extra_multipart_parts_are_refused_and_leave_nothing(client, settings):
    parts = [("file", "a.txt", b"hello")] + [(f"junk{n}", f"j{n}.bin", b"x" * 100) for n in range(50)]
    response = client.post(FILES, data=multipart(parts), content_type="multipart/form-data; boundary=XyZ")
    error = envelope(response, 422)
    assert "junk0" in error["details"]
    response = client.post(FILES, data=multipart([("file", "a.txt", b"hi"), ("note", "", b"plain field")]),
                           content_type="multipart/form-data; boundary=XyZ")
    assert "note" in envelope(response, 422)["details"]
    response = client.post(FILES, data=multipart([("file", "a.txt", b"one"), ("file", "b.txt", b"two")]),
                           content_type="multipart/form-data; boundary=XyZ")
    envelope(response, 422)
    assert incoming(settings) == []
    # More parts than werkzeug parses (1,000): refused halfway, and what it wrote is gone too.
    parts = [("file", "a.txt", b"hello")] + [(f"p{n}", f"p{n}.bin", b"x") for n in range(1500)]
    response = client.post(FILES, data=multipart(parts), content_type="multipart/form-data; boundary=XyZ")
    assert response.status_code in (413, 422) and response.json["error"]["code"] == response.status_code
    assert incoming(settings) == []
    assert client.post(FILES, data=multipart([("file", "a.txt", b"hello")]),
                       content_type="multipart/form-data; boundary=XyZ").status_code == 201
    assert incoming(settings) == []


def test_refused_and_accepted_uploads_leave_no_temp_file(client, settings):
    for data, name in [(b"\x7fELF" + b"\x00" * 64, "x.png"), (b"plain text", "a.txt")]:
        client.post(FILES, data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")
    assert incoming(settings) == []


def test_leftovers_are_swept_while_the_server_runs(tmp_path):
    settings = make_settings(tmp_path, upload_sweep_every_s=0.0)
    app = create_app(settings)
    folder = settings.data_dir / "files" / ".incoming"
    folder.mkdir(parents=True, exist_ok=True)
    stale, fresh = folder / "up-crashed", folder / "up-in-progress"
    stale.write_bytes(b"left by a killed worker")
    fresh.write_bytes(b"still arriving")
    an_hour_and_more_ago = time.time() - 3700
    os.utime(stale, (an_hour_and_more_ago, an_hour_and_more_ago))
    app.test_client().get("/health")  # any request, long after start
    assert not stale.exists() and fresh.exists()


# -- file types ----------------------------------------------------------------------------------
@pytest.mark.parametrize("data, mime, charset", [
    ("\ufeffHello, UTF-16 world. \u00e9\n".encode("utf-16-le"), "text/plain", "utf-16-le"),
    ("\ufeffHello, UTF-16 world.\n".encode("utf-16-be"), "text/plain", "utf-16-be"),
    (b"\xff\xfb\x90\x64" + bytes(400), "audio/mpeg", None),
])
def test_utf16_text_is_text_not_mpeg_audio(client, data, mime, charset):
    response = client.post(FILES, data={"file": (io.BytesIO(data), "notes")}, content_type="multipart/form-data")
    assert response.status_code == 201, response.json
    assert response.json["mime_type"] == mime
    if charset:
        served = client.get(response.json["url"])
        assert served.headers["Content-Type"] == f"text/plain; charset={charset}"
        assert served.data.decode(charset).lstrip("\ufeff").startswith("Hello, UTF-16 world.")


def test_an_edit_with_no_body_is_422_and_changes_nothing(chat, chat_app, conversation):
    before = snapshot(chat_app)
    envelope(chat.put(f"{API}/c1/messages/{conversation['user']}"), 422)
    envelope(chat.put(f"{API}/c1/messages/{conversation['user']}", json={}), 422)
    assert snapshot(chat_app) == before


def test_unknown_query_parameters_are_422(client):
    assert "foo" in envelope(client.get(f"{API}?foo=1"), 422)["details"]


def test_a_response_schema_number_beyond_64_bits_is_422(client):
    body = ('{"settings": {"response_mime_type": "application/json", '
            '"response_schema": {"type": "integer", "maximum": 1000000000000000000000000000000}}}')
    assert "settings.response_schema" in envelope(raw_json(client, "POST", API, body), 422)["details"]


@pytest.mark.parametrize("head, mime", [
    (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif"),
    (b"RIFF\0\0\0\0WEBPVP8 ", "image/webp"),
    (b"fLaC\x00\x00\x00\x22", "audio/flac"),
    (b"OggS\x00\x02", "audio/ogg"),
    (b"ID3\x03\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64", "audio/mpeg"),
    (b"FORM\0\0\0\x20AIFFCOMM", "audio/aiff"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08"
     b"\x42\x82\x84webm", "video/webm"),
    (b"RIFF\0\0\0\0AVI LIST", "video/x-msvideo"),
    (b"\0\0\0\x14ftypqt  \0\0\0\0qt  ", "video/quicktime"),
    (b"FLV\x01\x05\x00\x00\x00\x09", "video/x-flv"),
])
def test_binary_formats_are_known_by_their_signatures(client, head, mime):
    data = head + bytes(300)
    response = client.post(FILES, data={"file": (io.BytesIO(data), "upload.txt")}, content_type="multipart/form-data")
    assert response.status_code == 201 and response.json["mime_type"] == mime


def test_a_million_mistakes_are_refused_cheaply_and_named_by_the_first_ones(client):
    # Each unknown key is a validation error: a 16 MB body of them kept a worker busy for
    # seconds and answered 38 MB.
    many = "{" + ",".join(f'"k{n}": 1' for n in range(200_000)) + "}"
    error = envelope(raw_json(client, "POST", API, many), 400)
    assert "more than 1,000 members" in error["message"]
    error = envelope(raw_json(client, "POST", API, "{" + ",".join(f'"k{n}": 1' for n in range(1000)) + "}"), 422)
    assert len(error["details"]) == 51 and error["details"]["_more"] == ["more problems, not listed"]
    assert all(messages == ["Unknown field."] for key, messages in error["details"].items() if key != "_more")
    assert client.get(API).json["conversations"] == []


def test_each_problem_is_named_by_its_own_path(client):
    error = envelope(client.post(API, json={"junkA": 1, "junkB": 2, "settings": {"temperature": 9, "top_p": 9}}), 422)
    assert set(error["details"]) == {"junkA", "junkB", "settings.temperature", "settings.top_p"}
    from apsara.errors import _flatten

    assert _flatten({"a": {0: ["x"], 1: ["y"]}, "b": ["z"], "c": [{"d": ["w"]}, {"e": ["v"]}]}) == {
        "a.0": ["x"], "a.1": ["y"], "b": ["z"], "c.d": ["w"], "c.e": ["v"]}
