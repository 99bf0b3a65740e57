"""`python -m apsara.migrate`: a data folder copied into PostgreSQL, checked, and safe to run again."""
from __future__ import annotations

import pytest

from apsara import create_app, migrate
from apsara.testing.fake_gemini import Reply
from tests.conftest import make_settings
from tests.postgres import STORE, empty
from tests.test_files import png_bytes, upload

API = "/api/v1/conversations"


@pytest.fixture
def folder_app(tmp_path, fake):
    """An app on the file store, with a conversation of two turns, an edit and a file."""
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url))
    client = app.test_client()
    image = upload(client, png_bytes(), "photo.png").json
    for n in range(3):
        client.post(API, json={"id": f"c{n}", "title": f"talk {n}"})
    client.post(f"{API}/c0/messages", json={"text": "look", "files": [image["id"]]})
    first = client.post(f"{API}/c0/messages", json={"text": "again"}).json
    client.put(f"{API}/c0/messages/{first['user_message']['id']}", json={"text": "edited"})
    return app, image


def _run(capsys, tmp_path, url):
    code = migrate.main(["--data", str(tmp_path / "data"), "--database", url])
    return code, capsys.readouterr()


def test_a_folder_moves_to_the_database_whole(tmp_path, fake, folder_app, postgres_url, capsys):
    app, image = folder_app
    empty(postgres_url)
    before = {cid: app.test_client().get(f"{API}/{cid}").json for cid in ("c0", "c1", "c2")}
    code, out = _run(capsys, tmp_path, postgres_url)
    assert code == 0, out
    assert "3 copied" in out.out and "files: 1 copied" in out.out
    assert "check: the database holds everything" in out.out
    assert "conversations  [" in out.err  # the progress bar, on stderr

    STORE["database_url"] = postgres_url
    try:
        moved = create_app(make_settings(tmp_path / "elsewhere", gemini_api_key="k", gemini_base_url=fake.url))
        client = moved.test_client()
        listed = [c["id"] for c in client.get(API).json["conversations"]]
        assert sorted(listed) == ["c0", "c1", "c2"]
        for cid, view in before.items():
            after = client.get(f"{API}/{cid}").json
            strip = lambda v: [{k: x for k, x in m.items() if k != "parts"} for m in v["messages"]]  # noqa: E731
            assert strip(after) == strip(view) and after["title"] == view["title"]
        assert client.get(f"/api/v1/files/{image['id']}").json["sha256"] == image["sha256"]
        assert client.get(f"/api/v1/files/{image['id']}/content").data == png_bytes()
        # the conversation goes on in the database, versions and all
        fake.default = Reply(parts=["still here"])
        assert client.post(f"{API}/c0/messages", json={"text": "go on"}).status_code == 201
    finally:
        STORE["database_url"] = None


def test_running_it_again_copies_only_what_changed(tmp_path, fake, folder_app, postgres_url, capsys):
    app, _ = folder_app
    empty(postgres_url)
    assert _run(capsys, tmp_path, postgres_url)[0] == 0
    code, out = _run(capsys, tmp_path, postgres_url)
    assert code == 0 and "0 copied, 3 already there" in out.out and "files: 0 copied, 1 already there" in out.out
    app.test_client().patch(f"{API}/c1", json={"title": "renamed"})
    code, out = _run(capsys, tmp_path, postgres_url)
    assert code == 0 and "1 copied, 2 already there" in out.out


def test_refuses_without_a_database(tmp_path, capsys):
    with pytest.raises(SystemExit):
        migrate.main(["--data", str(tmp_path)])
    assert "postgresql://" in capsys.readouterr().err
