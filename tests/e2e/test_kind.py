"""Opt-in end-to-end test on a kind cluster: wraps hack/kind-e2e.sh.

Skipped unless asked for (`TASKWARDEN_E2E=1`, or `--with-e2e` where tests/e2e/conftest.py
registers that option) and unless a Docker engine answers. Not part of the default test paths;
run with `make e2e` or `TASKWARDEN_E2E=1 pytest tests/e2e`. See tests/e2e/README.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "kind-e2e.sh"


def _requested(config: pytest.Config) -> bool:
    if os.environ.get("TASKWARDEN_E2E", "") in {"1", "true", "yes"}:
        return True
    try:
        return bool(config.getoption("--with-e2e"))
    except ValueError:  # the option is not registered
        return False


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=20, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_kind_end_to_end(request: pytest.FixtureRequest) -> None:
    if not _requested(request.config):
        pytest.skip("opt-in: set TASKWARDEN_E2E=1 (or pass --with-e2e)")
    if not _docker_works():
        pytest.skip("no working Docker engine: kind cannot run here")
    timeout = float(os.environ.get("TASKWARDEN_E2E_TIMEOUT", "2400"))
    proc = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"hack/kind-e2e.sh failed ({proc.returncode}):\n"
        f"--- stdout (tail)\n{proc.stdout[-6000:]}\n--- stderr (tail)\n{proc.stderr[-12000:]}"
    )
