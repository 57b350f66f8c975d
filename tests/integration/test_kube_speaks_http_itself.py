"""kube.py authenticates to the real API server from a kubeconfig alone, without importing the
`kubernetes` client: client certificates (files or embedded data), a bearer token and a token
file. The token is sent on every request (a past bug: requests without it got 403 as
system:anonymous)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from taskwarden import controlplane
from tests.integration import helpers

# In a fresh interpreter: what one Kube, built from $KUBECONFIG, can do in namespace argv[1].
SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from taskwarden import kube

    async def main(ns):
        k = kube.Kube(workers=4)
        try:
            got = [await k.get_configmap(ns, "probe") for _ in range(3)]  # connections reused
            out = {"data": [g["data"] for g in got if g]}
            try:
                await k.list_secrets(ns, "")
                out["secrets"] = "allowed"
            except kube.ApiError as e:
                out["secrets"] = [e.status, json.loads(e.body).get("message", "")]
            return out
        finally:
            await k.aclose()

    out = asyncio.run(main(sys.argv[1]))
    out["kubernetes_imported"] = sorted(m for m in sys.modules if m.startswith("kubernetes"))
    print(json.dumps(out))
    """
)


def run_as(kubeconfig: Path, ns: str) -> dict[str, Any]:
    env = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(kubeconfig.parent)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, ns], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def write(path: Path, cluster: controlplane.ControlPlane, user: dict[str, Any]) -> Path:
    path.write_text(
        json.dumps(
            {
                "current-context": "c",
                "clusters": [
                    {
                        "name": "k",
                        "cluster": {
                            "server": cluster.server,
                            "certificate-authority": str(cluster.pki / "ca.crt"),
                        },
                    }
                ],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            }
        )
    )
    return path


def probe(api: client.ApiClient, ns: str) -> None:
    client.CoreV1Api(api).create_namespaced_config_map(
        ns, {"metadata": {"name": "probe"}, "data": {"seen": "yes"}}
    )


def test_client_certificates_from_files_and_from_data(
    cluster: controlplane.ControlPlane, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    probe(api, namespace)
    files = run_as(cluster.kubeconfig, namespace)
    assert files == {"data": [{"seen": "yes"}] * 3, "secrets": "allowed", "kubernetes_imported": []}
    pki = cluster.pki

    def data(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    embedded = write(
        tmp_path / "embedded",
        cluster,
        {"client-certificate-data": data("admin.crt"), "client-key-data": data("admin.key")},
    )
    assert run_as(embedded, namespace) == files


def test_a_service_account_token_and_token_file(
    cluster: controlplane.ControlPlane, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    probe(api, namespace)
    sa = f"reader-{uuid.uuid4().hex[:6]}"
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": sa}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": sa},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": sa},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
        },
    )
    token = helpers.sa_token(api, namespace, sa)
    (tmp_path / "token").write_text(token)
    for user in ({"token": token}, {"tokenFile": "token"}):
        out = run_as(write(tmp_path / "kubeconfig", cluster, user), namespace)
        assert out["data"] == [{"seen": "yes"}] * 3, user  # every request carries the token
        status, message = out["secrets"]
        # Denied as the ServiceAccount (not as system:anonymous): the token was sent.
        assert status == 403
        assert f"system:serviceaccount:{namespace}:{sa}" in message
        assert out["kubernetes_imported"] == []


def _hold_a_slot(kube: Any, namespace: str) -> asyncio.Task[Any]:
    """A request that keeps its slot for 20 s: a WATCH made through `request`, which the
    server keeps open."""
    return asyncio.create_task(
        kube.request(
            "GET",
            f"/api/v1/namespaces/{namespace}/configmaps",
            params={"watch": "1", "timeoutSeconds": "20"},
        )
    )


def test_an_urgent_write_does_not_queue_behind_the_workers(
    api: client.ApiClient, namespace: str
) -> None:
    """The revocation list's write is `urgent`: with every worker slot taken by requests that
    are still in flight (here one slot, held by a WATCH made through `request`, which the
    server keeps open), an urgent write completes while a normal one is still waiting."""
    from taskwarden.kube import Kube

    async def scenario() -> dict[str, bool]:
        kube = Kube(api.configuration, workers=1)
        try:
            holder = _hold_a_slot(kube, namespace)
            await asyncio.sleep(0.5)  # the holder has its slot (its request is out)
            body = {"metadata": {"name": "urgent", "namespace": namespace}}
            normal = asyncio.create_task(
                kube.create_configmap(
                    namespace, {"metadata": {"name": "normal", "namespace": namespace}}
                )
            )
            await kube.create_configmap(namespace, body, urgent=True)
            seen = {"holder_done": holder.done(), "normal_done": normal.done()}
            await asyncio.gather(holder, normal, return_exceptions=True)
            return seen
        finally:
            await kube.aclose()

    seen = asyncio.run(scenario())
    assert seen == {"holder_done": False, "normal_done": False}
    core = client.CoreV1Api(api)
    assert core.read_namespaced_config_map("urgent", namespace).metadata.name == "urgent"
    assert core.read_namespaced_config_map("normal", namespace).metadata.name == "normal"


def test_while_a_revocation_waits_to_be_listed_other_writes_give_way(
    api: client.ApiClient, namespace: str, monkeypatch: Any
) -> None:
    """kubehttp.YIELD_SLOTS: while `yielding()` (a revoked jti not yet listed), a new ordinary
    request also needs one of the yield slots (here one, held by a WATCH kept open by the
    server), even with worker slots free; once nothing waits to be listed, a new request goes
    at once. The publisher says when a jti waits: from `add` until its write returned."""
    from taskwarden import kube as kube_mod
    from taskwarden import kubehttp
    from taskwarden.config import LifecycleSettings
    from taskwarden.publishing import RevocationPublisher

    monkeypatch.setattr(kubehttp, "YIELD_SLOTS", 1)

    def cm(name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": namespace}}

    async def scenario() -> dict[str, bool]:
        kube = kube_mod.Kube(api.configuration, workers=4)
        listing = [True]
        kube.yielding = lambda: listing[0]
        try:
            holder = _hold_a_slot(kube, namespace)
            await asyncio.sleep(0.5)  # the holder has a worker slot and the yield slot
            gives_way = asyncio.create_task(kube.create_configmap(namespace, cm("gives-way")))
            await asyncio.sleep(2.0)  # ample for a create on a free slot
            seen = {"gave_way": not gives_way.done()}
            listing[0] = False  # the list is written: a new request does not yield
            await kube.create_configmap(namespace, cm("after"))
            seen["still_waiting"] = not gives_way.done()
            await asyncio.gather(holder, gives_way, return_exceptions=True)
            seen["done_in_the_end"] = gives_way.done() and gives_way.exception() is None

            publisher = RevocationPublisher(kube, namespace, LifecycleSettings())
            await publisher.load()
            seen["idle"] = not publisher.pending
            listed = publisher.add("jti-1", 4102444800.0)
            seen["pending_once_added"] = publisher.pending
            await publisher.flush()
            seen["listed"] = listed.done() and not publisher.pending
            return seen
        finally:
            await kube.aclose()

    seen = asyncio.run(scenario())
    assert seen == {
        "gave_way": True,
        "still_waiting": True,
        "done_in_the_end": True,
        "idle": True,
        "pending_once_added": True,
        "listed": True,
    }
    data = client.CoreV1Api(api).read_namespaced_config_map("taskwarden-revocations", namespace)
    assert "jti-1" in data.data["revocations.json"]
