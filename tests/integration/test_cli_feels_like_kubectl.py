"""The CLI against the real control plane, as a kubectl user meets it: `-n` from the kubeconfig
context, `--context`, `-o json|yaml|wide|name`, a 403 as one line and exit 1 (no traceback),
and `kubectl taskwarden` through the `kubectl-taskwarden` entry point and the real kubectl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from taskwarden import controlplane
from tests.integration import helpers as h

BIN = Path(sys.executable).parent


def run(*argv: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run(
        [str(a) for a in argv],
        env={**base, "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def kubeconfig(
    cluster: controlplane.ControlPlane, api: client.ApiClient, namespace: str, tmp_path: Path
) -> Path:
    """The admin kubeconfig with the test namespace as its context's namespace, plus a context
    `nobody` for a ServiceAccount that RBAC grants nothing."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account("default", {"metadata": {"name": f"nobody-{namespace}"}})
    token = h.sa_token(api, "default", f"nobody-{namespace}")
    cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    cluster_name = cfg["contexts"][0]["context"]["cluster"]
    cfg["contexts"][0]["context"]["namespace"] = namespace
    cfg["users"].append({"name": "nobody", "user": {"token": token}})
    cfg["contexts"].append(
        {"name": "nobody", "context": {"cluster": cluster_name, "user": "nobody"}}
    )
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def task(active_task: Callable[..., h.Task]) -> h.Task:
    return active_task("kubectl-like")


def test_namespace_defaults_to_the_kubeconfig_context(
    kubeconfig: Path, namespace: str, task: h.Task
) -> None:
    by_flag = run(BIN / "taskwarden", "--kubeconfig", kubeconfig, "get")
    assert by_flag.returncode == 0, by_flag.stderr
    assert by_flag.stdout.splitlines()[1].split()[:2] == ["kubectl-like", "Active"]
    by_env = run(BIN / "taskwarden", "get", "-o", "name", KUBECONFIG=str(kubeconfig))
    assert by_env.stdout == "agenttask.taskwarden.dev/kubectl-like\n", by_env.stderr
    other = run(BIN / "taskwarden", "get", "-n", "default", KUBECONFIG=str(kubeconfig))
    assert other.returncode == 0 and other.stdout == ""
    assert "No agent tasks found in namespace default." in other.stderr


def test_output_formats(kubeconfig: Path, namespace: str, task: h.Task) -> None:
    tw = (BIN / "taskwarden", "--kubeconfig", kubeconfig)
    listed = json.loads(run(*tw, "get", "-o", "json").stdout)
    assert listed["kind"] == "List"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["kubectl-like"]
    one = yaml.safe_load(run(*tw, "get", "kubectl-like", "-o", "yaml").stdout)
    assert one["kind"] == "AgentTask" and one["status"]["phase"] == "Active"
    wide = run(*tw, "get", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-3:] == ["RULE", "REQUESTER", "SECRET"]
    assert wide[1].split()[-2:] == [
        f"system:serviceaccount:{namespace}:agent",
        "kubectl-like-credential",
    ]
    everywhere = run(*tw, "get", "-A").stdout.splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:2] == [namespace, "kubectl-like"] for line in everywhere[1:])
    missing = run(*tw, "get", "nope")
    assert missing.returncode == 3 and "NotFound" in missing.stderr


def test_a_refusal_by_the_api_is_one_line_and_exit_1(kubeconfig: Path, namespace: str) -> None:
    for argv in (("get",), ("revoke", "any"), ("describe", "any")):
        out = run(
            BIN / "taskwarden",
            "--kubeconfig",
            kubeconfig,
            "--context",
            "nobody",
            *argv,
            "-n",
            namespace,
        )
        assert out.returncode == 1, out
        assert out.stderr.startswith("Error from server (Forbidden): "), out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    unreachable = run(BIN / "taskwarden", "get", KUBECONFIG=str(kubeconfig.parent / "none"))
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("error: kubeconfig: "), unreachable.stderr


def test_kubectl_plugin(cluster: controlplane.ControlPlane, kubeconfig: Path, task: h.Task) -> None:
    plugin = BIN / "kubectl-taskwarden"
    assert plugin.is_file(), "pip install -e . did not install the kubectl-taskwarden script"
    direct = run(plugin, "get", "-o", "name", KUBECONFIG=str(kubeconfig))
    assert direct.stdout == "agenttask.taskwarden.dev/kubectl-like\n", direct.stderr
    kubectl = controlplane.find_binaries(build=False)["kubectl"]
    listed = run(kubectl, "plugin", "list", "--name-only")
    assert "kubectl-taskwarden" in listed.stdout, listed.stderr
    via_kubectl = run(kubectl, "taskwarden", "get", "-o", "name", KUBECONFIG=str(kubeconfig))
    assert via_kubectl.stdout == direct.stdout, via_kubectl.stderr
    usage = run(kubectl, "taskwarden", "get", "-o", "bogus")
    assert usage.returncode != 0 and "usage: kubectl taskwarden get" in usage.stderr
