"""`taskwarden controlplane up|env|down`: a detached control plane a user can point kubectl at."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from taskwarden import controlplane

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskwarden", "controlplane", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
    )


def test_up_env_down(tmp_path: Path) -> None:
    d = tmp_path / "cp"
    up = _cli("up", "--dir", str(d), "--crds", str(ROOT / "crds"))
    assert up.returncode == 0, up.stderr
    lines = up.stdout.splitlines()
    assert lines[0] == f"export KUBECONFIG={d / 'kubeconfig'}"
    # ... then what a local `taskwarden run` needs (test_local_run_needs_admission.py)
    assert "export TASKWARDEN_WEBHOOK_URL=https://127.0.0.1:" in up.stdout
    try:
        env = _cli("env", "--dir", str(d))
        assert f"KUBECONFIG={d / 'kubeconfig'}" in env.stdout
        kubectl = controlplane.find_binaries(build=False)["kubectl"]
        out = subprocess.run(
            [str(kubectl), "get", "crd", "agenttasks.taskwarden.dev", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=dict(os.environ, KUBECONFIG=str(d / "kubeconfig")),
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["spec"]["group"] == "taskwarden.dev"
        pids = json.loads((d / "state.json").read_text())["pids"].values()
    finally:
        down = _cli("down", "--dir", str(d))
    assert down.returncode == 0
    for pid in pids:
        assert not controlplane._running(pid), f"process {pid} survived `controlplane down`"
    assert _cli("env", "--dir", str(d)).returncode == 1
