"""Admission answers only the API server; the public endpoints live on a port with no admission.

A pod can reach the operator's ports. It must not get a review answered by posting a made-up
AdmissionReview (claiming any user, any namespace), must not learn other namespaces' tasks from a
refusal, and must not make the operator write audit records. On the local control plane the API
server presents a client certificate (its --admission-control-config-file) that the admission
port requires; where no certificate is configured a refusal names nothing read from the cluster.
The rest of tests/integration/test_admission.py shows the API server's own calls still work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from taskwarden import config, controlplane, names
from taskwarden.kube import Kube
from taskwarden.server import https
from tests.integration import helpers as h

ADMITTED = "taskwarden_admission_requests_total"
CLAIMED = {"username": "alice", "groups": ["sre", "system:authenticated"]}


def forged_review(namespace: str, task: str) -> dict[str, Any]:
    """What a pod could post: an approval of `task` claiming to come from someone else."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": h.GROUP, "version": h.VERSION, "kind": "AgentApproval"},
            "resource": {"group": h.GROUP, "version": h.VERSION, "resource": "agentapprovals"},
            "namespace": namespace,
            "name": "forged",
            "operation": "CREATE",
            "userInfo": CLAIMED,
            "object": {
                "apiVersion": f"{h.GROUP}/{h.VERSION}",
                "kind": "AgentApproval",
                "metadata": {
                    "name": "forged",
                    "namespace": namespace,
                    # What the mutating webhook would stamp for the claimed user.
                    "annotations": {names.APPROVER_ANNOTATION: json.dumps(CLAIMED)},
                },
                "spec": {
                    "taskName": task,
                    "taskUID": "guessed",
                    "specHash": "sha256:guessed",
                    "decision": "approve",
                    "reason": "forged",
                },
            },
        },
    }


def post(url: str, ctx: ssl.SSLContext, body: dict[str, Any]) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


def server_ca(api: client.ApiClient, operator_namespace: str) -> ssl.SSLContext:
    import base64

    s = client.CoreV1Api(api).read_namespaced_secret("taskwarden-webhook-tls", operator_namespace)
    return ssl.create_default_context(cadata=base64.b64decode(s.data["ca.crt"]).decode())


def audit_denials(operator: h.OperatorProcess) -> int:
    return operator.log.read_text(errors="replace").count('"admission-denied"')


def test_a_forged_review_without_the_apiserver_certificate_is_refused_before_review(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    operator: h.OperatorProcess,
    operator_namespace: str,
    webhooks: None,
    active_task: Callable[..., h.Task],
) -> None:
    task = active_task("victim")
    url = f"https://127.0.0.1:{operator.webhook_port}/validate-agentapprovals"
    reviewed, audited = operator.metric(ADMITTED), audit_denials(operator)

    plain = server_ca(api, operator_namespace)  # trusts the operator, presents no certificate
    cluster_client = server_ca(api, operator_namespace)  # a cluster CA cert, not the webhook one
    cluster_client.load_cert_chain(cluster.pki / "admin.crt", cluster.pki / "admin.key")
    for ctx in (plain, cluster_client):
        with pytest.raises(OSError):  # the TLS handshake fails: no review is read
            post(url, ctx, forged_review(task.namespace, task.name))

    # The API server's certificate gets the review answered: the check above can fail.
    apiserver = server_ca(api, operator_namespace)
    apiserver.load_cert_chain(
        cluster.pki / "webhook-client.crt", cluster.pki / "webhook-client.key"
    )
    status, raw = post(url, apiserver, forged_review(task.namespace, task.name))
    assert status == 200 and json.loads(raw)["response"]["allowed"] is False
    assert operator.metric(ADMITTED) == reviewed + 1  # only the authenticated one was reviewed
    h.wait_for(lambda: audit_denials(operator) == audited + 1, what="the one audit record")
    assert audit_denials(operator) == audited + 1


def test_the_public_port_serves_jwks_and_no_admission(
    api: client.ApiClient, operator: h.OperatorProcess, operator_namespace: str, webhooks: None
) -> None:
    ctx = server_ca(api, operator_namespace)
    base = f"https://127.0.0.1:{operator.public_port}"
    with urllib.request.urlopen(f"{base}/.well-known/jwks.json", context=ctx, timeout=5) as r:
        assert json.loads(r.read()) == h.jwks(api, operator_namespace)
    reviewed = operator.metric(ADMITTED)
    for path in ("/validate-agentapprovals", "/validate-agenttasks", "/mutate-pods"):
        status, _ = post(f"{base}{path}", ctx, forged_review("default", "x"))
        assert status in (404, 405), path
    assert operator.metric(ADMITTED) == reviewed
    with pytest.raises(OSError):  # and the admission port serves no JWKS to a stranger
        urllib.request.urlopen(
            f"https://127.0.0.1:{operator.webhook_port}/.well-known/jwks.json",
            context=ctx,
            timeout=5,
        )


def test_without_a_client_ca_a_refusal_reveals_nothing_and_audits_nothing(
    api: client.ApiClient,
    operator: h.OperatorProcess,
    operator_namespace: str,
    webhooks: None,
    active_task: Callable[..., h.Task],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A cluster whose API server has no client certificate: the review runs, says nothing."""
    task = active_task("victim")
    secret_facts = {task.uid, task.body["status"]["specHash"]}
    ports = {"webhook": controlplane.free_port(), "public": controlplane.free_port()}
    settings = config.from_env(
        {
            "TASKWARDEN_OPERATOR_NAMESPACE": operator_namespace,
            "TASKWARDEN_WEBHOOK_PORT": str(ports["webhook"]),
            "TASKWARDEN_PUBLIC_PORT": str(ports["public"]),
            "TASKWARDEN_MANAGE_WEBHOOKS": "false",
        }
    )
    assert settings.server.admission_client_ca == ""

    async def forge() -> tuple[int, bytes]:
        kube = Kube(api.configuration, workers=2)
        server = https.WebhookServer(
            settings, kube, jwks=dict, revocations=lambda now: {"revocations.json": "{}"}
        )
        await server.start()
        try:
            url = f"https://127.0.0.1:{ports['webhook']}/validate-agentapprovals"
            ctx = server_ca(api, operator_namespace)
            review = forged_review(task.namespace, task.name)
            return await asyncio.to_thread(post, url, ctx, review)
        finally:
            await server.stop()
            kube.close()

    with caplog.at_level(logging.INFO, logger="taskwarden"):
        status, raw = asyncio.run(forge())
    response = json.loads(raw)["response"]
    assert status == 200 and response["allowed"] is False
    assert response["status"]["message"] == https.WITHHELD
    assert not any(fact in raw.decode() for fact in secret_facts)
    assert not [r for r in caplog.records if r.name == "taskwarden.audit"]
    # The operator itself saw the real reason (the UID it withheld), for its own log only.
    assert any(
        task.uid in r.getMessage() for r in caplog.records if "unauthenticated" in r.getMessage()
    )
