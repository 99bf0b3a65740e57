"""Programs some tests need from the system (Chromium, nginx): found, or a clear skip.

In CI (CI=true) a missing program fails the test instead, since .ci/run installs them.
"""
from __future__ import annotations

import os
import shutil

import pytest


def need_program(program: str, debian_package: str) -> str:
    path = shutil.which(program)
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"{program} is missing: .ci/run should have installed the Debian package {debian_package}")
    pytest.skip(f"{program} is not installed (apt-get install -y {debian_package}); CI runs this test")
