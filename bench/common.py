"""Shared set-up for benchmarks: a fresh real control plane, CRDs, the operator as a subprocess,
watch-based observation of tasks/Secrets, and percentile helpers."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client, watch  # noqa: E402
from tests.integration import helpers as h  # noqa: E402

from taskwarden import controlplane  # noqa: E402

OP_NS = "taskwarden-system"


def machine() -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores {cpu}{mem}, {system}, Python {platform.python_version()}"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@contextlib.contextmanager
def environment(
    **operator_env: str,
) -> Iterator[tuple[controlplane.ControlPlane, client.ApiClient, h.OperatorProcess]]:
    workdir = Path(tempfile.mkdtemp(prefix="taskwarden-bench-"))
    cp = controlplane.start(workdir / "cp")
    try:
        api = cp.api_client()
        api.configuration.connection_pool_maxsize = 64
        controlplane.install_crds(api, ROOT / "crds")
        client.CoreV1Api(api).create_namespace({"metadata": {"name": OP_NS}})
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_cluster_role(
            {
                "metadata": {"name": "taskwarden:agent"},
                "rules": [
                    {
                        "apiGroups": ["taskwarden.dev"],
                        "resources": ["agenttasks"],
                        "verbs": ["create", "get", "list", "watch", "patch", "update"],
                    }
                ],
            }
        )
        env = dict(os.environ)
        env.update(operator_env)
        op = h.OperatorProcess(
            kubeconfig=cp.kubeconfig, workdir=workdir, operator_namespace=OP_NS, env=env
        )
        op.start()
        try:
            yield cp, api, op
        finally:
            op.stop()
    finally:
        cp.stop()


class Observer:
    """Watches tasks and credential Secrets in a namespace; records first-seen times."""

    def __init__(self, api: client.ApiClient, ns: str) -> None:
        self.api, self.ns = api, ns
        self.active: dict[str, float] = {}
        self.phase_at: dict[tuple[str, str], float] = {}
        self.secret_added: dict[str, float] = {}
        self.secret_deleted: dict[str, float] = {}
        self.jti_listed: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._tasks, daemon=True),
            threading.Thread(target=self._secrets, daemon=True),
            threading.Thread(target=self._revocations, daemon=True),
        ]
        for t in self._threads:
            t.start()
        time.sleep(0.5)

    def _loop(self, fn: Any, handle: Any, **kw: Any) -> None:
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(fn, timeout_seconds=30, _request_timeout=40, **kw):
                    handle(ev, time.monotonic())
                    if self._stop.is_set():
                        break
            except Exception:
                time.sleep(0.1)

    def _tasks(self) -> None:
        custom = client.CustomObjectsApi(self.api)

        def handle(ev: dict, now: float) -> None:
            obj = ev["object"]
            name = obj["metadata"]["name"]
            phase = (obj.get("status") or {}).get("phase")
            if phase:
                self.phase_at.setdefault((name, phase), now)
            if phase == "Active":
                self.active.setdefault(name, now)

        self._loop(
            custom.list_namespaced_custom_object,
            handle,
            group="taskwarden.dev",
            version="v1alpha1",
            namespace=self.ns,
            plural="agenttasks",
        )

    def _secrets(self) -> None:
        core = client.CoreV1Api(self.api)

        def handle(ev: dict, now: float) -> None:
            name = ev["object"].metadata.name
            if ev["type"] == "DELETED":
                self.secret_deleted.setdefault(name, now)
            else:
                self.secret_added.setdefault(name, now)

        self._loop(
            core.list_namespaced_secret,
            handle,
            namespace=self.ns,
            label_selector="taskwarden.dev/task",
        )

    def _revocations(self) -> None:
        import json

        core = client.CoreV1Api(self.api)

        def handle(ev: dict, now: float) -> None:
            data = (ev["object"].data or {}).get("revocations.json")
            if not data:
                return
            for e in json.loads(data).get("revoked", []):
                self.jti_listed.setdefault(e["jti"], now)

        self._loop(
            core.list_namespaced_config_map,
            handle,
            namespace=OP_NS,
            field_selector="metadata.name=taskwarden-revocations",
        )

    def stop(self) -> None:
        self._stop.set()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
