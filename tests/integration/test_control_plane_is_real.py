"""The local control plane behaves like a real cluster: RBAC, TokenRequest/Review, GC."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from taskwarden import controlplane
from tests.integration.helpers import service_account, wait_for


def _as_token(cluster: controlplane.ControlPlane, token: str) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = cluster.server
    cfg.ssl_ca_cert = str(cluster.pki / "ca.crt")
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(cfg)


def test_apiserver_reports_its_pinned_version(api: client.ApiClient) -> None:
    info = client.VersionApi(api).get_code()
    assert info.git_version == controlplane.K8S_VERSION


def test_service_account_without_rights_is_forbidden(
    cluster: controlplane.ControlPlane, api: client.ApiClient, namespace: str
) -> None:
    service_account(api, namespace, "nobody")
    tr = client.CoreV1Api(api).create_namespaced_service_account_token(
        "nobody", namespace, {"spec": {"expirationSeconds": 600}}
    )
    nobody = client.CoreV1Api(_as_token(cluster, tr.status.token))
    with pytest.raises(client.ApiException) as err:
        nobody.list_namespaced_secret(namespace)
    assert err.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in err.value.body


def test_pod_bound_token_carries_pod_extras(api: client.ApiClient, namespace: str) -> None:
    from tests.integration.helpers import pod

    p = pod(api, namespace, "agent-0", "agent")
    tr = client.CoreV1Api(api).create_namespaced_service_account_token(
        "agent",
        namespace,
        {
            "spec": {
                "audiences": ["https://kubernetes.default.svc.cluster.local"],
                "expirationSeconds": 600,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "agent-0"},
            }
        },
    )
    review = client.AuthenticationV1Api(api).create_token_review(
        {"spec": {"token": tr.status.token}}
    )
    assert review.status.authenticated
    extra = review.status.user.extra
    assert extra["authentication.kubernetes.io/pod-name"] == ["agent-0"]
    assert extra["authentication.kubernetes.io/pod-uid"] == [p["metadata"]["uid"]]


def test_garbage_collector_removes_owned_objects(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {
                "name": "owned",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner.metadata.uid,
                    }
                ],
            }
        },
    )
    core.delete_namespaced_config_map("owner", namespace)
    start = time.monotonic()

    def gone() -> bool:
        try:
            core.read_namespaced_secret("owned", namespace)
        except client.ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, timeout=30, what="GC of an owned Secret")
    assert time.monotonic() - start < 30
