"""The replicas deployment: Compose's `replicas` profile and the nginx site in front of two replicas."""
from __future__ import annotations

import shutil
import subprocess

from tests.servers import ROOT
from tests.tools import need_program


def test_the_replicas_profile_runs_postgres_two_replicas_and_a_proxy(tmp_path):
    compose = need_program("docker-compose", "docker-compose")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    run = subprocess.run([compose, "--profile", "replicas", "config"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    for service in ("postgres:", "replica-a:", "replica-b:", "proxy:"):
        assert f"\n  {service}\n" in run.stdout
    assert run.stdout.count("APSARA_DATABASE_URL: postgresql://apsara:") == 2
    # only in the profile: a plain `up` still starts the single machine alone
    assert run.stdout.count("profiles:\n    - replicas") == 4
    assert "nginx-replicas.conf:/etc/nginx/conf.d/default.conf" in run.stdout


def test_the_replicas_nginx_site_is_valid_and_streams_unbuffered(tmp_path):
    nginx = need_program("nginx", "nginx")
    site = (ROOT / "deploy" / "nginx-replicas.conf").read_text()
    assert "proxy_buffering off;" in site and "replica-a:8000" in site and "replica-b:8000" in site
    # nginx resolves upstream names when it reads the file: stand them in with addresses.
    local = site.replace("replica-a:8000", "127.0.0.1:8001").replace("replica-b:8000", "127.0.0.1:8002")
    local = local.replace("listen 80;", "listen 127.0.0.1:18080;")
    (tmp_path / "site.conf").write_text(local)
    (tmp_path / "nginx.conf").write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
                                         f"events {{}}\nhttp {{\n access_log off;\n include {tmp_path}/site.conf;\n}}\n")
    check = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
