"""Nodes for the local control plane: kube-scheduler and kwok, so pods have a real lifecycle.

There is no kubelet here. kwok (sigs.k8s.io/kwok, a Kubernetes SIG project) plays one for every
Node, driven by its own "fast" Stages: the Node goes Ready, a pod bound to it goes from Pending to
Running with a pod IP in about a second, and a deleted pod goes through graceful termination
(Terminating, then gone). kube-scheduler binds pods that name no node (Deployments, Jobs), which
needs the Node's allocatable cpu, memory and pods. Called by taskwarden.controlplane.cluster.start.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from taskwarden.controlplane.binaries import KWOK_STAGES, ControlPlaneError

NODE = "kwok-node-0"
"""The one Node; kwok runs every pod bound to it."""

FAIL_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"
"""kwok's chaos Stage: a Running pod labelled with it ("true") has its container fail."""

ALLOCATABLE = {"cpu": "32", "memory": "256Gi", "pods": "110"}


def scheduler_argv(bins: dict[str, Path], kubeconfig: Path, port: int, certs: Path) -> list[str]:
    return [
        str(bins["kube-scheduler"]),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        f"--secure-port={port}",
        "--bind-address=127.0.0.1",
        f"--cert-dir={certs}",
    ]


def kwok_argv(bins: dict[str, Path], kubeconfig: Path, port: int) -> list[str]:
    return [
        str(bins["kwok"]),
        f"--kubeconfig={kubeconfig}",
        f"--config={bins[KWOK_STAGES]}",
        "--manage-all-nodes=true",
        f"--server-address=127.0.0.1:{port}",
    ]


def node_body(name: str = NODE) -> dict[str, object]:
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {"kwok.x-k8s.io/node": "fake"}},
        # A Node may carry its status on create (a kubelet registers that way); the scheduler
        # needs allocatable, kwok's node Stage fills in the conditions and addresses.
        "status": {"allocatable": ALLOCATABLE, "capacity": ALLOCATABLE},
    }


def _request(
    server: str, ctx: ssl.SSLContext, path: str, body: object | None = None
) -> dict[str, object]:
    req = urllib.request.Request(  # noqa: S310  # the local apiserver, https only
        server + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(req, context=ctx, timeout=5) as r:  # noqa: S310
        return dict(json.loads(r.read()))


def create_node(server: str, ctx: ssl.SSLContext, name: str = NODE) -> None:
    try:
        _request(server, ctx, "/api/v1/nodes", node_body(name))
    except urllib.error.HTTPError as e:
        if e.code != 409:  # already there: a re-used state directory
            raise ControlPlaneError(f"creating Node {name} failed: HTTP {e.code}") from e


def node_ready(server: str, ctx: ssl.SSLContext, name: str = NODE) -> bool:
    try:
        node = _request(server, ctx, f"/api/v1/nodes/{name}")
    except (urllib.error.URLError, OSError):
        return False
    status = node.get("status")
    conditions = status.get("conditions", []) if isinstance(status, dict) else []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def wait_node_ready(
    server: str, ctx: ssl.SSLContext, timeout: float, check: Callable[[], None], name: str = NODE
) -> None:
    """Poll until kwok has made the Node Ready; `check()` raises if a process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check()
        if node_ready(server, ctx, name):
            return
        time.sleep(0.1)
    raise ControlPlaneError(f"Node {name} not Ready after {timeout:.0f}s (is kwok running?)")
