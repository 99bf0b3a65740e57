"""The data folder is resolved once, at configuration: a relative one works from any working directory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from apsara import create_app
from apsara.config import Settings, from_env
from tests.servers import ROOT


def test_a_relative_data_dir_becomes_absolute_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = from_env({"APSARA_DATA_DIR": "data"})
    assert settings.data_dir == tmp_path / "data" and settings.data_dir.is_absolute()
    assert Settings(data_dir=Path("x/../data")).data_dir == tmp_path / "data"
    assert settings.replace(max_upload_mb=1).data_dir == tmp_path / "data"


def test_files_download_with_a_relative_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    client = create_app(Settings(data_dir=Path("data"), secret_key="s")).test_client()
    import io

    meta = client.post("/api/v1/files", data={"file": (io.BytesIO(b"hello\n"), "a.txt")},
                       content_type="multipart/form-data").json
    response = client.get(meta["url"])
    assert response.status_code == 200 and response.data == b"hello\n"
    assert (tmp_path / "data" / "files" / "local" / f"{meta['id']}.bin").is_file()


@pytest.mark.slow
def test_part_of_the_suite_passes_with_relative_data_dirs_from_another_directory(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "APSARA_TEST_RELATIVE_DATA_DIR": "1", "PYTHONPATH": str(ROOT)}
    modules = [str(ROOT / "tests" / name) for name in ("test_files.py", "test_conversations.py")]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                          "-c", str(ROOT / "pytest.ini"), "--rootdir", str(ROOT), *modules],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout
    assert not (ROOT / "apsara" / "data").exists()
