"""Core issuance on the real control plane: attest the pod, decide by policy, sign, deliver."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

from kubernetes import client

from taskwarden.credentials import tokens
from tests.integration import helpers as h


def test_allowed_task_gets_a_verifiable_credential(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    active_task: Callable[..., h.Task],
) -> None:
    triage = active_task("triage", pod_name="agent-0")
    p, created = triage.env.pod, triage.created
    st = triage.status
    assert st["reason"] == "Issued"
    assert st["identity"]["spiffeID"] == f"spiffe://cluster.local/ns/{namespace}/sa/agent"
    assert st["identity"]["podUID"] == p["metadata"]["uid"]
    assert st["decision"]["allowed"] is True and st["decision"]["policy"] == "agents"
    assert st["specHash"].startswith("sha256:")
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "True"
    secret = triage.secret()
    assert secret.type == "taskwarden.dev/credential"
    assert secret.metadata.labels["taskwarden.dev/task"] == "triage"
    owner = secret.metadata.owner_references[0]
    assert (owner.kind, owner.uid, owner.controller) == (
        "AgentTask",
        created["metadata"]["uid"],
        True,
    )
    assert set(secret.data) == {"token", "expires_at", "spiffe_id", "jwks.json"}

    jwks = h.jwks(api, operator_namespace)
    claims = tokens.verify(
        h.token_of(secret),
        jwks,
        now=time.time(),
        audience="https://api.github.com",
        issuer=f"https://127.0.0.1:{operator.public_port}",
    )
    assert claims["jti"] == st["credential"]["jti"]
    assert claims["sub"] == st["identity"]["spiffeID"]
    assert claims["scope"] == "github:read:repo:acme/widgets"
    assert claims["taskwarden.dev/task"] == {
        "namespace": namespace,
        "name": "triage",
        "uid": created["metadata"]["uid"],
    }
    assert claims["pod"] == {"name": "agent-0", "uid": p["metadata"]["uid"]}
    assert claims["data_class"] == "internal"
    assert claims["exp"] - claims["iat"] == 300
    assert base64.b64decode(secret.data["spiffe_id"]).decode() == claims["sub"]

    # The token never reaches status, events or metrics.
    token = h.token_of(secret)
    assert token not in str(h.get(api, namespace, "agenttasks", "triage"))
    assert token not in operator.metrics()
    assert token not in operator.log.read_text()
    reasons = [e.reason for e in h.wait_for(lambda: h.events_for(api, namespace, "triage"))]
    assert "Issued" in reasons
    assert operator.metric("taskwarden_credentials_issued_total", kind="issue") >= 1


def test_task_without_policy_is_denied_with_reason(
    api: client.ApiClient, namespace: str, operator: h.OperatorProcess
) -> None:
    h.pod(api, namespace, "agent-0", "agent")
    h.create_task(api, namespace, h.task_body("nopolicy"))
    st = h.wait_phase(api, namespace, "nopolicy", "Denied")["status"]
    assert st["reason"] == "NoMatchingPolicy"
    assert "agent" in st["message"] and "spec.subjects.serviceAccounts" in st["message"]
    assert h.secret_or_none(api, namespace, "nopolicy-credential") is None


def test_uncovered_scope_is_denied_naming_it(
    operator: h.OperatorProcess, agent_env: Callable[..., h.AgentEnv]
) -> None:
    st = agent_env().task("delete", phase="Denied", actions=("read", "delete")).status
    assert st["reason"] == "ScopeNotCovered"
    assert "github:delete:repo:acme/widgets" in st["message"]


def test_service_account_mismatch_keeps_task_pending(
    api: client.ApiClient, namespace: str, operator: h.OperatorProcess
) -> None:
    h.pod(api, namespace, "impostor", "other")
    h.create(api, namespace, "agentpolicies", h.policy_body())
    h.create_task(api, namespace, h.task_body("mismatch", pod_name="impostor"))
    st = h.wait_phase(api, namespace, "mismatch", "Pending")["status"]
    assert st["reason"] == "ServiceAccountMismatch"
    assert h.secret_or_none(api, namespace, "mismatch-credential") is None


def test_pending_task_becomes_active_when_pod_runs(
    api: client.ApiClient, namespace: str, operator: h.OperatorProcess
) -> None:
    h.pod(api, namespace, "agent-0", "agent", running=False)
    h.create(api, namespace, "agentpolicies", h.policy_body())
    h.create_task(api, namespace, h.task_body("later", pod_name="agent-0"))
    st = h.wait_phase(api, namespace, "later", "Pending")["status"]
    assert st["reason"] == "PodNotRunning"
    h.run_pod(api, namespace, "agent-0")
    h.wait_phase(api, namespace, "later", "Active")
    # Status (naming the jti) is written before the Secret, on purpose: wait for the Secret.
    h.wait_for(lambda: h.secret_or_none(api, namespace, "later-credential"), what="the Secret")


def test_missing_pod_is_pending_pod_not_found(
    api: client.ApiClient, namespace: str, operator: h.OperatorProcess
) -> None:
    h.create(api, namespace, "agentpolicies", h.policy_body())
    h.create_task(api, namespace, h.task_body("nopod", pod_name="ghost"))
    st = h.wait_phase(api, namespace, "nopod", "Pending")["status"]
    assert st["reason"] == "PodNotFound"
    h.pod(api, namespace, "ghost", "agent")
    h.wait_phase(api, namespace, "nopod", "Active")
