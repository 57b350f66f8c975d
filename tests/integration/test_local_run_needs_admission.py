"""`taskwarden run` refuses to start without an admission path, and the README's local flow,
`eval "$(taskwarden controlplane up)"` then `taskwarden run`, enforces admission: a forged
requester annotation is refused by the real kube-apiserver calling the operator's webhook.

Runs its own detached control plane (`controlplane up --dir`), as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.integration import helpers as h

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REQ_KEY = "taskwarden.dev/requester"


def user_env(**extra: str) -> dict[str, str]:
    """A shell's environment without any TASKWARDEN_* or KUBECONFIG from the test runner."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("TASKWARDEN_") and k != "KUBECONFIG"
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def exports(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        words = shlex.split(line)
        assert words[0] == "export", line
        key, _, value = words[1].partition("=")
        out[key] = value
    return out


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "cp"
    try:
        yield d
    finally:
        subprocess.run(
            [BIN / "taskwarden", "controlplane", "down", "--dir", str(d)],
            env=user_env(),
            capture_output=True,
            timeout=60,
            check=False,
        )


def start(argv: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(
            ["bash", "-c", argv],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def healthy(proc: subprocess.Popen[bytes], port: str, log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"run exited {proc.returncode}:\n{log.read_text()[-3000:]}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def test_run_refuses_without_admission_path_and_enforces_it_with_the_printed_env(
    state: Path, tmp_path: Path
) -> None:
    d = shlex.quote(str(state))
    up = subprocess.run(
        ["bash", "-c", f"taskwarden controlplane up --dir {d}"],
        cwd=ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    printed = exports(up.stdout)
    for key in ("KUBECONFIG", "TASKWARDEN_WEBHOOK_URL", "TASKWARDEN_ISSUER", "TASKWARDEN_BIND"):
        assert key in printed, up.stdout
    env_out = subprocess.run(
        [BIN / "taskwarden", "controlplane", "env", "--dir", str(state)],
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert exports(env_out.stdout) == printed  # `env` prints the same as `up`
    api = client.ApiClient(
        config.new_client_from_config(config_file=printed["KUBECONFIG"]).configuration
    )
    admreg = client.AdmissionregistrationV1Api(api)

    # 1. Only a kubeconfig: no admission path, so it refuses before touching the cluster.
    refused = subprocess.run(
        [BIN / "taskwarden", "run"],
        env=user_env(KUBECONFIG=printed["KUBECONFIG"]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("error: no admission path") and "--no-admission" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr
    assert admreg.list_validating_webhook_configuration().items == []

    # 2. --no-admission starts, says so (in kopf's JSON log format here), registers nothing.
    log = tmp_path / "no-admission.log"
    proc = start(
        "taskwarden run --no-admission --log-format json",
        user_env(**{**printed, "TASKWARDEN_WEBHOOK_URL": ""}),
        log,
    )
    try:
        h.wait_for(
            lambda: healthy(proc, printed["TASKWARDEN_HEALTH_PORT"], log),
            timeout=90,
            what="run --no-admission healthy",
        )
    finally:
        stop(proc)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    warning = [r for r in lines if "NOT enforced" in r.get("message", "")]
    assert warning and warning[0]["severity"] == "warn", log.read_text()[-2000:]
    assert admreg.list_validating_webhook_configuration().items == []

    # 3. The README's flow, exactly: eval the printed environment, then `taskwarden run`.
    log = tmp_path / "run.log"
    proc = start(
        f'eval "$(taskwarden controlplane up --dir {d})" && exec taskwarden run', user_env(), log
    )
    try:
        h.wait_for(
            lambda: healthy(proc, printed["TASKWARDEN_HEALTH_PORT"], log),
            timeout=90,
            what="taskwarden run healthy",
        )
        ns = "forgery"
        client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
        forged = h.task_body("forged")
        forged["metadata"]["annotations"] = {
            REQ_KEY: json.dumps({"username": "system:serviceaccount:kube-system:admin"})
        }

        def refusal() -> str | None:
            try:
                h.create(api, ns, "agenttasks", forged)
            except ApiException as e:
                return str(json.loads(e.body)["message"]) if e.status in (400, 403) else None
            h.custom(api).delete_namespaced_custom_object(
                h.GROUP, h.VERSION, ns, "agenttasks", "forged"
            )
            return None

        msg = h.wait_for(refusal, timeout=60, interval=0.3, what="the forged requester refused")
    finally:
        stop(proc)
    # The user's `taskwarden run` has no TASKWARDEN_ADMISSION_MODE: auto, so CEL mode on this
    # 1.36 control plane. The policy refuses in the API server with the webhook's message (or,
    # before the API server has loaded the policy, the validate webhook does).
    assert h.POLICY_REFUSAL in msg or 'admission webhook "agenttasks.validate' in msg
    assert "metadata.annotations[taskwarden.dev/requester]" in msg
    assert "admission webhook URL " + printed["TASKWARDEN_WEBHOOK_URL"] in log.read_text()
