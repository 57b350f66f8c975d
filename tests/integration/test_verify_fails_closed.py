"""Issue 12 item 8: `taskwarden verify` printed VALID when the revocation list could not be
read. Each test makes the list unreadable in a way a real deployment meets (RBAC 403, a
hanging endpoint, a document that is not the list) and checks that the CLI refuses the token,
says the list was UNAVAILABLE, and does not call the token revoked. The controls show that the
same token and the same user verify once the list can be read."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from taskwarden import controlplane
from tests.integration import helpers as h

AUD = "https://api.github.com"
RBAC = "rbac.authorization.k8s.io"


def cli(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskwarden", *args],
        env=dict(os.environ, KUBECONFIG=str(kubeconfig)),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def kubectl_json(cluster: controlplane.ControlPlane, ns: str, configmap: str) -> str:
    """`kubectl get configmap NAME -o json`, exactly as a tool owner would save it."""
    kubectl = str(controlplane.find_binaries()["kubectl"])
    cmd = [kubectl, "--kubeconfig", str(cluster.kubeconfig), "-n", ns, "get", "configmap"]
    return subprocess.run(
        [*cmd, configmap, "-o", "json"], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def assert_unavailable(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode != 0, out.stdout + out.stderr
    assert not out.stdout.startswith("VALID"), out.stdout
    assert out.stdout.startswith("UNAVAILABLE: the revocation list"), out.stdout + out.stderr
    assert "INVALID: Revoked" not in out.stdout and "is revoked" not in out.stdout


@pytest.fixture
def token_file(
    api: client.ApiClient, namespace: str, operator: h.OperatorProcess, tmp_path: Path
) -> Path:
    h.pod(api, namespace, "agent-0", "agent")
    h.create(api, namespace, "agentpolicies", h.policy_body())
    h.create_task(api, namespace, h.task_body("fc"))
    h.wait_phase(api, namespace, "fc", "Active")
    secret = h.wait_for(lambda: h.secret_or_none(api, namespace, "fc-credential"))
    path = tmp_path / "token"
    path.write_text(h.token_of(secret))
    return path


@pytest.fixture
def reader(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator_namespace: str,
    tmp_path: Path,
) -> Iterator[tuple[Path, str]]:
    """A tool owner's identity (a ServiceAccount, real TokenRequest token) that may read
    ConfigMap taskwarden-jwks and nothing else in the operator namespace. Yields its
    kubeconfig and the name of its Role."""
    sa = "tool-owner"
    h.service_account(api, namespace, sa)
    role = f"verify-{uuid.uuid4().hex[:8]}"
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(
        operator_namespace,
        {
            "metadata": {"name": role},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["taskwarden-jwks"],
                    "verbs": ["get"],
                }
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        operator_namespace,
        {
            "metadata": {"name": role},
            "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
        },
    )
    kubeconfig = tmp_path / "tool-owner.kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {
                            "server": cluster.server,
                            "certificate-authority": str(cluster.pki / "ca.crt"),
                        },
                    }
                ],
                "users": [{"name": sa, "user": {"token": h.sa_token(api, namespace, sa)}}],
                "contexts": [{"name": sa, "context": {"cluster": "local", "user": sa}}],
                "current-context": sa,
            }
        )
    )
    try:
        yield kubeconfig, role
    finally:
        for delete in (rbac.delete_namespaced_role_binding, rbac.delete_namespaced_role):
            try:
                delete(role, operator_namespace)
            except client.ApiException as e:
                if e.status != 404:
                    raise


def test_verify_without_rbac_on_the_revocation_list_refuses_as_unavailable(
    api: client.ApiClient,
    namespace: str,
    operator_namespace: str,
    token_file: Path,
    reader: tuple[Path, str],
) -> None:
    kubeconfig, role = reader
    # RBAC answers 403 whether or not the ConfigMap exists yet: no lookup is made.
    out = cli(kubeconfig, "verify", str(token_file), "--audience", AUD)
    assert_unavailable(out)
    assert "403" in out.stdout, out.stdout

    # Control: the same identity, once it may read the list, gets VALID for the same token.
    rule = {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": ["taskwarden-jwks", "taskwarden-revocations"],
        "verbs": ["get"],
    }
    client.RbacAuthorizationV1Api(api).patch_namespaced_role(
        role, operator_namespace, {"rules": [rule]}
    )

    def valid() -> subprocess.CompletedProcess[str] | None:
        res = cli(kubeconfig, "verify", str(token_file), "--audience", AUD)
        return res if res.returncode == 0 else None

    ok = h.wait_for(valid, what="VALID once the list is readable", timeout=30)
    assert ok.stdout.startswith("VALID"), ok.stdout


@pytest.fixture
def hanging_endpoint() -> Iterator[str]:
    """A loopback HTTP endpoint that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/revocations"
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in held:
            conn.close()
        server.close()


def test_verify_with_a_revocation_endpoint_that_times_out_refuses_as_unavailable(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    operator_namespace: str,
    token_file: Path,
    hanging_endpoint: str,
    tmp_path: Path,
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(h.jwks(api, operator_namespace)))
    out = cli(
        cluster.kubeconfig,
        "verify",
        str(token_file),
        "--audience",
        AUD,
        "--jwks",
        str(jwks),
        "--revocations",
        hanging_endpoint,
    )
    assert_unavailable(out)
    assert "timed out" in out.stdout.lower(), out.stdout


def test_verify_with_a_document_that_is_not_the_list_refuses_as_unavailable(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    operator_namespace: str,
    token_file: Path,
    tmp_path: Path,
) -> None:
    """`{}`, a misspelt key, or the wrong ConfigMap used to read as "nothing revoked"."""
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(h.jwks(api, operator_namespace)))
    wrong_cm = kubectl_json(cluster, operator_namespace, "taskwarden-jwks")
    for name, text in (
        ("empty.json", "{}"),
        ("misspelt.json", '{"revokd": [], "updatedAt": "2026-11-29T06:00:00Z"}'),
        ("jwks-configmap.json", wrong_cm),
    ):
        doc = tmp_path / name
        doc.write_text(text)
        out = cli(
            cluster.kubeconfig,
            "verify",
            str(token_file),
            "--audience",
            AUD,
            "--jwks",
            str(jwks),
            "--revocations",
            str(doc),
        )
        assert_unavailable(out)


def test_verify_reads_the_whole_configmap_as_kubectl_prints_it(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator_namespace: str,
    token_file: Path,
    tmp_path: Path,
) -> None:
    """The documented way to hand a tool the list: `kubectl get configmap -o json > file`."""
    jti = h.get(api, namespace, "agenttasks", "fc")["status"]["credential"]["jti"]
    h.patch(api, namespace, "agenttasks", "fc", {"spec": {"completed": True}})
    h.wait_for(lambda: jti in h.revoked_jtis(api, operator_namespace), what="jti listed")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(h.jwks(api, operator_namespace)))
    doc = tmp_path / "revocations-configmap.json"
    doc.write_text(kubectl_json(cluster, operator_namespace, "taskwarden-revocations"))
    args = ("verify", str(token_file), "--audience", AUD, "--jwks", str(jwks))
    out = cli(cluster.kubeconfig, *args, "--revocations", str(doc))
    assert out.returncode == 1 and out.stdout.startswith("INVALID: Revoked"), out.stdout
