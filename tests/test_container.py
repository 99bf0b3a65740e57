"""The container files: Compose reads docker-compose.yml (Debian's 1.29 too); the image's user owns only its data."""
from __future__ import annotations

import re
import shutil
import subprocess

from tests.servers import ROOT
from tests.tools import need_program


def test_debians_docker_compose_reads_the_compose_file(tmp_path):
    compose = need_program("docker-compose", "docker-compose")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    env = (ROOT / ".env.example").read_text().replace("gemini=\n", "gemini=key-from-dotenv\n")
    (tmp_path / ".env").write_text(env)
    run = subprocess.run([compose, "config"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "gemini: key-from-dotenv" in run.stdout and "APSARA_DATA_DIR: /app/data" in run.stdout
    assert "apsara-data:/app/data" in run.stdout


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", dockerfile)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_images_user_owns_only_the_data_folder():
    steps = _instructions((ROOT / "Dockerfile").read_text())
    copies = [args for kind, args in steps if kind in ("COPY", "ADD")]
    assert copies and not any("--chown" in args for args in copies), "the code must stay root's"
    chowned = [target for kind, args in steps if kind == "RUN"
               for target in re.findall(r"chown\s+(?:-\w+\s+)*\S+\s+([^&;]+)", args)]
    assert chowned and all(target.split() == ["/app/data"] for target in chowned), chowned
    users = [index for index, (kind, _) in enumerate(steps) if kind == "USER"]
    assert users and steps[users[-1]][1].strip() not in ("root", "0")
    assert all(kind not in ("COPY", "ADD", "RUN") for kind, _ in steps[users[-1]:]), "nothing written as the user"


def test_the_images_healthcheck_asks_for_readiness():
    healthcheck = next(args for kind, args in _instructions((ROOT / "Dockerfile").read_text())
                       if kind == "HEALTHCHECK")
    assert "/health'" in healthcheck or '/health"' in healthcheck
