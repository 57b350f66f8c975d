"""Admission on the real control plane: the kube-apiserver calls the operator's webhooks over TLS.

Agents authenticate with real pod-bound ServiceAccount tokens (TokenRequest), so the requester
stamp carries pod name and UID; humans are impersonated. Every refusal asserted here comes from
Taskwarden admission (a webhook, or in CEL mode its ValidatingAdmissionPolicy; the message names
which), never from RBAC or the CRD schema. The file runs in both admission modes (see
h.ADMISSION_MODE); test_admission_cel.py covers what only CEL mode does.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import ssl
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from taskwarden import controlplane, handlers, pki
from taskwarden.kube import APPROVALS, Kube
from taskwarden.server import approval_status
from tests.integration import helpers as h

GH = "https://api.github.com"
REQ_KEY = "taskwarden.dev/requester"
APPR_KEY = "taskwarden.dev/approver"


# --------------------------------------------------------------------------- helpers
# (fixtures, `webhooks` among them, are in conftest.py)


def refusal(fn: Any, *args: Any, **kwargs: Any) -> str:
    """Call fn expecting a webhook refusal; return the message."""
    with pytest.raises(ApiException) as err:
        fn(*args, **kwargs)
    body = json.loads(err.value.body)
    assert err.value.status in (400, 403), body
    message = str(body["message"])
    assert h.taskwarden_refusal(message), message
    return message


def agent(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    ns: str,
    sa: str = "agent",
    pod: str | None = "agent-0",
) -> client.ApiClient:
    return h.agent_api(cluster, api, ns, sa, pod)


def create_as(who: client.ApiClient, ns: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    return h.create(who, ns, plural, body)


def approval_body(
    name: str, task: str, spec_hash: str, decision: str = "approve"
) -> dict[str, Any]:
    return {
        "apiVersion": f"{h.GROUP}/{h.VERSION}",
        "kind": "AgentApproval",
        "metadata": {"name": name},
        "spec": {"taskName": task, "specHash": spec_hash, "decision": decision, "reason": "test"},
    }


def approval_policy(ttl: str = "15m", requesters: list[str] | None = None) -> dict[str, Any]:
    return h.policy_body(
        approval="required",
        extra={"approvalTTL": ttl, "requesters": requesters or []},
    )


def https_get(operator: h.OperatorProcess, ca: str, path: str) -> Any:
    ctx = ssl.create_default_context(cadata=ca)  # verifies the 127.0.0.1 SAN too
    with urllib.request.urlopen(
        f"https://127.0.0.1:{operator.public_port}{path}", context=ctx, timeout=5
    ) as r:
        return json.loads(r.read())


def tls_secret(api: client.ApiClient, operator_ns: str) -> dict[str, str]:
    s = client.CoreV1Api(api).read_namespaced_secret("taskwarden-webhook-tls", operator_ns)
    return {k: base64.b64decode(v).decode() for k, v in s.data.items()}


# --------------------------------------------------------------------------- requester binding


def test_agent_creates_its_own_task_stamped_with_its_pod(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    env = agent_env()
    before = operator.metric(
        "taskwarden_admission_requests_total", webhook="mutate-agenttasks", allowed="true"
    )
    created = env.task("own", creator=env.agent_api(), pod_name="agent-0").created

    stamp = json.loads(created["metadata"]["annotations"][REQ_KEY])
    assert stamp["username"] == f"system:serviceaccount:{namespace}:agent"
    assert stamp["podName"] == "agent-0" and stamp["podUID"] == env.pod_uid
    assert f"system:serviceaccounts:{namespace}" in stamp["groups"]
    after = operator.metric(
        "taskwarden_admission_requests_total", webhook="mutate-agenttasks", allowed="true"
    )
    if h.CEL_MODE:  # the usual case is decided in the API server (test_admission_cel.py)
        return
    assert after >= before + 1
    assert (
        operator.metric(
            "taskwarden_admission_duration_seconds_count", webhook="validate-agenttasks"
        )
        >= 1
    )


def test_identity_not_listed_in_requesters_is_refused(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
) -> None:
    h.create(api, namespace, "agentpolicies", h.policy_body())
    h.service_account(api, namespace, "other")
    other = agent(cluster, api, namespace, "other", pod=None)
    before = operator.metric(
        "taskwarden_admission_requests_total", webhook="validate-agenttasks", allowed="false"
    )
    msg = refusal(create_as, other, namespace, "agenttasks", h.task_body("stolen"))
    assert f"requester system:serviceaccount:{namespace}:other" in msg
    assert "metadata.annotations[taskwarden.dev/requester]" in msg and "spec.requesters" in msg
    # The same for a human without a listing (alice has RBAC for agenttasks in this namespace).
    msg = refusal(create_as, h.as_user(api, "alice"), namespace, "agenttasks", h.task_body("a"))
    assert "requester alice" in msg
    # ... and for the cluster admin: RBAC may allow, the requester binding still refuses.
    refusal(create_as, api, namespace, "agenttasks", h.task_body("admin"))
    assert (
        operator.metric(
            "taskwarden_admission_requests_total", webhook="validate-agenttasks", allowed="false"
        )
        >= before + 3
    )


def test_listed_requester_may_create_tasks_for_the_agent(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    orch = f"system:serviceaccount:{namespace}:orchestrator"
    env = agent_env(policy=h.policy_body(extra={"requesters": [orch]}))
    h.service_account(api, namespace, "orchestrator")
    by_orch = agent(cluster, api, namespace, "orchestrator", pod=None)
    created = env.task("by-orch", creator=by_orch).created
    stamp = json.loads(created["metadata"]["annotations"][REQ_KEY])
    assert stamp["username"] == orch and "podName" not in stamp


def test_forged_or_changed_requester_is_refused(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    me = agent_env().agent_api()
    forged = h.task_body("forged")
    forged["metadata"]["annotations"] = {
        REQ_KEY: json.dumps({"username": "system:serviceaccount:kube-system:admin", "groups": []})
    }
    msg = refusal(create_as, me, namespace, "agenttasks", forged)
    assert (
        "metadata.annotations[taskwarden.dev/requester]: set by admission from the authenticated "
        "user who created the task; clients cannot set it"
    ) in msg
    # CEL mode: the agent's own task is decided by the policy, with the webhook's message.
    decider = h.POLICY_REFUSAL if h.CEL_MODE else 'admission webhook "agenttasks.mutate'
    assert decider in msg

    create_as(me, namespace, "agenttasks", h.task_body("real"))
    change = {"metadata": {"annotations": {REQ_KEY: json.dumps({"username": "x", "groups": []})}}}
    msg = refusal(h.patch, api, namespace, "agenttasks", "real", change)
    assert "clients cannot change or remove it" in msg
    # Removing it is undone by the mutating webhook: the stamp stays.
    h.patch(api, namespace, "agenttasks", "real", {"metadata": {"annotations": {REQ_KEY: None}}})
    ann = h.get(api, namespace, "agenttasks", "real")["metadata"]["annotations"]
    assert json.loads(ann[REQ_KEY])["username"] == f"system:serviceaccount:{namespace}:agent"


def test_agent_may_complete_its_task_but_not_change_it(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    env = agent_env()
    me = env.agent_api()
    done = env.task("done", creator=me)
    h.patch(me, namespace, "agenttasks", "done", {"spec": {"completed": True}})
    done.wait("Completed")


# --------------------------------------------------------------------------- approvals


def awaiting_task(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    ns: str,
    name: str,
    *,
    ttl: str = "15m",
    creator: client.ApiClient | None = None,
    requesters: list[str] | None = None,
) -> str:
    env = h.agent_env(api, ns, policy=approval_policy(ttl, requesters), cluster=cluster)
    task = env.task(name, creator=creator or env.agent_api(), phase="AwaitingApproval")
    return str(task.status["specHash"])


def test_requester_cannot_approve_their_own_task(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
) -> None:
    alice = h.as_user(api, "alice")
    spec_hash = awaiting_task(
        cluster, api, namespace, "mine", creator=alice, requesters=["user:alice"]
    )
    msg = refusal(
        create_as, alice, namespace, "agentapprovals", approval_body("self", "mine", spec_hash)
    )
    assert "request.userInfo.username: alice requested task mine and cannot approve it" in msg
    assert "separation of duties" in msg
    # The agent cannot approve its own access either.
    msg = refusal(
        create_as,
        agent(cluster, api, namespace),
        namespace,
        "agentapprovals",
        approval_body("agent-self", "mine", spec_hash),
    )
    assert "separation of duties" in msg
    assert h.phase_of(api, namespace, "mine") == "AwaitingApproval"


def test_listed_approver_approves_and_the_task_becomes_active(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
) -> None:
    spec_hash = awaiting_task(cluster, api, namespace, "refund")
    h.service_account(api, namespace, "other")
    msg = refusal(
        create_as,
        agent(cluster, api, namespace, "other", pod=None),
        namespace,
        "agentapprovals",
        approval_body("nobody", "refund", spec_hash),
    )
    assert "is not listed in spec.approvers of policy agents" in msg
    msg = refusal(
        create_as,
        h.as_user(api, "alice"),
        namespace,
        "agentapprovals",
        approval_body("old", "refund", "sha256:" + "0" * 64),
    )
    assert "spec.specHash: sha256:" in msg and "does not match status.specHash" in msg
    msg = refusal(
        create_as,
        h.as_user(api, "alice"),
        namespace,
        "agentapprovals",
        approval_body("ghost", "no-such-task", spec_hash),
    )
    assert "spec.taskName: AgentTask no-such-task does not exist" in msg

    forged = approval_body("forged", "refund", spec_hash)
    forged["metadata"]["annotations"] = {APPR_KEY: json.dumps({"username": "alice", "groups": []})}
    msg = refusal(create_as, h.as_user(api, "bob", "sre"), namespace, "agentapprovals", forged)
    assert "metadata.annotations[taskwarden.dev/approver]: set by admission" in msg

    created = create_as(
        h.as_user(api, "alice"),
        namespace,
        "agentapprovals",
        approval_body("ok", "refund", spec_hash),
    )
    assert json.loads(created["metadata"]["annotations"][APPR_KEY])["username"] == "alice"
    st = h.wait_phase(api, namespace, "refund", "Active")["status"]
    assert "alice" in json.dumps(st["conditions"])


def test_approval_by_group_membership_counts(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
) -> None:
    spec_hash = awaiting_task(cluster, api, namespace, "grp")
    create_as(
        h.as_user(api, "bob", "sre"),
        namespace,
        "agentapprovals",
        approval_body("bob", "grp", spec_hash),
    )
    h.wait_phase(api, namespace, "grp", "Active")


def test_approval_expiry_revokes_the_task(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
) -> None:
    spec_hash = awaiting_task(cluster, api, namespace, "brief", ttl="10s")
    create_as(
        h.as_user(api, "alice"),
        namespace,
        "agentapprovals",
        approval_body("brief", "brief", spec_hash),
    )
    h.wait_phase(api, namespace, "brief", "Active")
    st = h.wait_phase(api, namespace, "brief", "Revoked", timeout=25)["status"]
    assert st["reason"] == "ApprovalExpired"
    assert h.secret_or_none(api, namespace, "brief-credential") is None


APPROVAL_STATUS_WIRED = "on_approval_event" in inspect.getsource(handlers)


@pytest.mark.skipif(
    not APPROVAL_STATUS_WIRED,
    reason="handlers.approval_event does not call server.on_approval_event yet",
)
def test_approval_status_records_approver_and_expiry(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
) -> None:
    spec_hash = awaiting_task(cluster, api, namespace, "st", ttl="10s")
    create_as(
        h.as_user(api, "alice"), namespace, "agentapprovals", approval_body("st", "st", spec_hash)
    )

    def status(valid: bool) -> dict[str, Any] | None:
        s = h.get(api, namespace, "agentapprovals", "st").get("status") or {}
        return s if s.get("valid") is valid else None

    st = h.wait_for(lambda: status(True), what="approval status valid")
    assert st["approver"] == "user:alice" and st["reason"].startswith("Valid")
    assert st["expiresAt"] and st["approvedAt"]
    st = h.wait_for(lambda: status(False), timeout=25, what="approval status expired")
    assert st["reason"].startswith("Expired")


def test_approval_status_writer_records_validity_and_expiry(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
) -> None:
    """ApprovalStatusController.on_event, driven in-process against the real API."""
    spec_hash = awaiting_task(cluster, api, namespace, "inproc", ttl="3s")
    create_as(
        h.as_user(api, "alice"),
        namespace,
        "agentapprovals",
        approval_body("inproc", "inproc", spec_hash),
    )
    create_as(
        h.as_user(api, "bob", "sre"),
        namespace,
        "agentapprovals",
        approval_body("by-group", "inproc", spec_hash),
    )

    async def drive() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        kube = Kube(api.configuration, workers=2)
        svc = approval_status.ApprovalStatusController(kube)
        try:
            for name in ("inproc", "by-group"):
                body = await kube.get(APPROVALS, namespace, name)
                await svc.on_event("ADDED", body)
            first = (await kube.get(APPROVALS, namespace, "inproc"))["status"]
            await asyncio.sleep(4.5)  # the writer re-checks at expiresAt by itself
            second = (await kube.get(APPROVALS, namespace, "inproc"))["status"]
            other = (await kube.get(APPROVALS, namespace, "by-group"))["status"]
            return first, second, other
        finally:
            await svc.stop()
            kube.close()

    first, second, other = asyncio.run(drive())
    assert first["valid"] is True and first["approver"] == "user:alice"
    assert first["reason"] == "Valid: approved by alice"
    assert first["expiresAt"] and first["approvedAt"]
    assert second["valid"] is False and second["reason"].startswith("Expired:")
    assert other["approver"] == "user:bob"


# --------------------------------------------------------------------------- delegation


def delegation_setup(
    cluster: controlplane.ControlPlane, api: client.ApiClient, ns: str, max_depth: int = 1
) -> client.ApiClient:
    env = h.agent_env(api, ns, policy=delegation_policy(max_depth), cluster=cluster)
    me = env.agent_api()
    env.task("parent", creator=me, actions=("read", "comment"))
    return me


def delegation_policy(max_depth: int) -> dict[str, Any]:
    pol = h.policy_body(
        actions=("read", "comment", "push"),
        audiences=(GH, "https://other.example"),
        extra={"delegation": {"allowed": True, "maxDepth": max_depth}},
    )
    pol["spec"]["rules"][0]["maxDataClass"] = "confidential"
    return pol


def child(name: str, parent: str = "parent", **kw: Any) -> dict[str, Any]:
    extra = {"delegatedFrom": parent, **kw.pop("extra", {})}
    return h.task_body(name, ttl="10m", credential_ttl="2m", extra=extra, **kw)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"tool": "slack"}, "spec.scopes[0]: slack:read:repo:acme/widgets"),
        ({"actions": ("push",)}, "spec.scopes[0]: github:push:repo:acme/widgets"),
        ({"resources": ("repo:acme/*",)}, "spec.scopes[0]: github:read:repo:acme/*"),
        ({"audiences": ("https://other.example",)}, "spec.audiences: audience"),
        ({"extra": {"dataClass": "confidential"}}, "spec.dataClass: confidential is higher"),
    ],
)
def test_widening_delegation_is_refused(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
    kw: dict[str, Any],
    field: str,
) -> None:
    me = delegation_setup(cluster, api, namespace)
    msg = refusal(create_as, me, namespace, "agenttasks", child("wide", **kw))
    assert field in msg and "parent" in msg


def test_delegation_depth_and_requester_are_enforced(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
) -> None:
    me = delegation_setup(cluster, api, namespace, max_depth=1)
    create_as(me, namespace, "agenttasks", child("kid"))
    kid = h.wait_phase(api, namespace, "kid", "Active")
    assert (
        kid["status"]["expiresAt"]
        <= h.get(api, namespace, "agenttasks", "parent")["status"]["expiresAt"]
    )
    msg = refusal(create_as, me, namespace, "agenttasks", child("grandkid", parent="kid"))
    assert "spec.delegatedFrom: delegation depth 2 exceeds delegation.maxDepth 1" in msg
    h.service_account(api, namespace, "other")
    msg = refusal(
        create_as,
        agent(cluster, api, namespace, "other", pod=None),
        namespace,
        "agenttasks",
        child("foreign"),
    )
    assert "a delegated task must be created by its parent's agent service account" in msg
    msg = refusal(create_as, me, namespace, "agenttasks", child("orphan", parent="nobody"))
    assert "spec.delegatedFrom: parent task nobody does not exist" in msg


def test_parent_completion_revokes_the_child(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
) -> None:
    me = delegation_setup(cluster, api, namespace)
    create_as(me, namespace, "agenttasks", child("kid"))
    h.wait_phase(api, namespace, "kid", "Active")
    h.patch(me, namespace, "agenttasks", "parent", {"spec": {"completed": True}})
    h.wait_phase(api, namespace, "parent", "Completed")
    st = h.wait_phase(api, namespace, "kid", "Revoked")["status"]
    assert st["reason"] == "ParentRevoked"
    h.wait_for(
        lambda: h.secret_or_none(api, namespace, "kid-credential") is None,
        what="child credential deleted",
    )
    msg = refusal(create_as, me, namespace, "agenttasks", child("late"))
    assert "spec.delegatedFrom: parent task parent is Completed" in msg


# --------------------------------------------------------------------------- pods


def test_annotated_pod_gets_the_credential_mounted(
    api: client.ApiClient, namespace: str, operator: h.OperatorProcess, webhooks: None
) -> None:
    h.create_task(api, namespace, h.task_body("t1"))  # the task first: the guard wants it
    created = h.pod(api, namespace, "agent-0", "agent", annotations={"taskwarden.dev/task": "t1"})
    spec = created["spec"]
    vol = next(v for v in spec["volumes"] if v["name"] == "taskwarden-credential")
    assert vol["secret"]["secretName"] == "t1-credential" and vol["secret"]["optional"] is True
    (c,) = spec["containers"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "taskwarden-credential")
    assert mount["mountPath"] == "/var/run/secrets/taskwarden.dev/" and mount["readOnly"] is True
    assert {"name": "TASKWARDEN_TOKEN_FILE", "value": "/var/run/secrets/taskwarden.dev/token"} in c[
        "env"
    ]
    plain = h.pod(api, namespace, "plain", "agent")
    assert not plain["spec"].get("volumes")


def test_pod_of_another_account_cannot_mount_a_task_credential(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    env = agent_env()
    env.create_task("guarded", creator=env.agent_api())
    # The guard is on by default: no namespace label is needed.
    h.service_account(api, namespace, "intruder")
    body = {
        "metadata": {
            "generateName": "intruder-",
            "annotations": {"taskwarden.dev/task": "guarded"},
        },
        "spec": {
            "serviceAccountName": "intruder",
            "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": "busybox"}],
        },
    }
    core = client.CoreV1Api(api)

    def refused() -> str | None:
        try:
            pod = core.create_namespaced_pod(namespace, body)
        except ApiException as e:
            return str(json.loads(e.body)["message"]) if e.status == 403 else None
        core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
        return None  # the apiserver has not called the webhook yet

    msg = h.wait_for(refused, timeout=20, interval=0.2, what="pod guard active")
    assert 'admission webhook "pods.validate.taskwarden.dev" denied' in msg
    assert (
        "spec.volumes[0].secret.secretName: Secret guarded-credential holds the credential "
        "of AgentTask guarded" in msg
    )
    assert "runs as intruder" in msg
    # Referencing the Secret from env is refused the same way.
    env_body = json.loads(json.dumps(body))
    del env_body["metadata"]["annotations"]
    env_body["spec"]["containers"][0]["env"] = [
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "guarded-credential", "key": "token"}}}
    ]
    msg = refusal(core.create_namespaced_pod, namespace, env_body)
    assert "spec.containers[0].env[0].valueFrom.secretKeyRef.name" in msg
    # The task's own account may mount it.
    h.pod(api, namespace, "agent-1", "agent", annotations={"taskwarden.dev/task": "guarded"})


# --------------------------------------------------------------------------- TLS and endpoints


def test_webhooks_are_served_over_tls_with_the_shared_ca(
    api: client.ApiClient, operator: h.OperatorProcess, operator_namespace: str, webhooks: None
) -> None:
    tls = tls_secret(api, operator_namespace)
    assert set(tls) == {"ca.crt", "tls.crt", "tls.key"}
    adm = client.AdmissionregistrationV1Api(api)
    mutating = adm.read_mutating_webhook_configuration("taskwarden")
    validating = adm.read_validating_webhook_configuration("taskwarden")
    for cfg in (mutating, validating):
        assert len(cfg.webhooks) == 3
        for hook in cfg.webhooks:
            assert base64.b64decode(hook.client_config.ca_bundle).decode() == tls["ca.crt"]
            assert hook.client_config.url.startswith(f"https://127.0.0.1:{operator.webhook_port}/")
            assert hook.timeout_seconds == 5 and hook.side_effects == "None"
            assert hook.admission_review_versions == ["v1"]
            exprs = hook.namespace_selector.match_expressions
            never = next(e for e in exprs if e.key == "kubernetes.io/metadata.name")
            assert never.operator == "NotIn"
            assert set(never.values) == {"kube-system", operator_namespace}
    policies = {w.name: w.failure_policy for w in mutating.webhooks + validating.webhooks}
    assert policies["pods.mutate.taskwarden.dev"] == "Ignore"
    assert {p for n, p in policies.items() if n != "pods.mutate.taskwarden.dev"} == {"Fail"}
    guard = next(w for w in validating.webhooks if w.name == "pods.validate.taskwarden.dev")
    assert guard.namespace_selector.match_labels is None  # on by default
    opt_out = guard.namespace_selector.match_expressions[0]
    assert (opt_out.key, opt_out.operator, opt_out.values) == (
        "taskwarden.dev/guard",
        "NotIn",
        ["disabled"],
    )

    ca = tls["ca.crt"]
    discovery = https_get(operator, ca, "/.well-known/openid-configuration")
    issuer = f"https://127.0.0.1:{operator.public_port}"
    assert discovery["issuer"] == issuer
    assert discovery["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert discovery["id_token_signing_alg_values_supported"] == ["ES256"]
    assert https_get(operator, ca, "/.well-known/jwks.json") == h.jwks(api, operator_namespace)
    revocations = https_get(operator, ca, "/revocations")
    assert isinstance(revocations.get("revoked"), list)
    with pytest.raises(OSError):  # a client without the CA refuses the server
        with urllib.request.urlopen(
            f"https://127.0.0.1:{operator.public_port}/revocations", timeout=5
        ):
            pass


def test_a_malformed_review_is_refused_not_crashed(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    operator: h.OperatorProcess,
    operator_namespace: str,
    webhooks: None,
) -> None:
    ctx = ssl.create_default_context(cadata=tls_secret(api, operator_namespace)["ca.crt"])
    ctx.load_cert_chain(cluster.pki / "webhook-client.crt", cluster.pki / "webhook-client.key")
    for payload in (b"not json", b"{}", json.dumps({"request": {"uid": "x"}}).encode()):
        req = urllib.request.Request(
            f"https://127.0.0.1:{operator.webhook_port}/validate-agenttasks",
            data=payload,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            assert r.status == 200
            resp = json.loads(r.read())["response"]
        assert resp["allowed"] is False and resp["status"]["code"] == 400
        assert resp["status"]["message"].startswith("request.")
    assert operator.healthy()


def test_an_expiring_certificate_is_renewed_on_start(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    webhooks: None,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    """A Secret whose certificate has < 30 days left is regenerated; the old CA stays trusted."""
    core = client.CoreV1Api(api)
    now = time.time()
    old = pki.generate_tls(["127.0.0.1"], now - pki.CERT_VALIDITY + 10 * 86400)
    secret = core.read_namespaced_secret("taskwarden-webhook-tls", operator_namespace)
    secret.data = {
        k: base64.b64encode(v.encode()).decode()
        for k, v in {"ca.crt": old.ca_bundle, "tls.crt": old.cert, "tls.key": old.key}.items()
    }
    core.replace_namespaced_secret("taskwarden-webhook-tls", operator_namespace, secret)
    operator.stop()
    operator.start()

    tls = h.wait_for(
        lambda: (t := tls_secret(api, operator_namespace))["tls.crt"] != old.cert and t,
        what="renewed certificate",
    )
    assert (
        pki.tls_problem(
            pki.TLSMaterial(tls["ca.crt"], tls["tls.crt"], tls["tls.key"]), ["127.0.0.1"], now
        )
        is None
    )
    assert old.ca_bundle in tls["ca.crt"]  # replicas still serving the old one stay trusted
    adm = client.AdmissionregistrationV1Api(api)
    hook = adm.read_validating_webhook_configuration("taskwarden").webhooks[0]
    assert base64.b64decode(hook.client_config.ca_bundle).decode() == tls["ca.crt"]
    assert https_get(operator, tls["ca.crt"], "/.well-known/jwks.json")["keys"]

    env = agent_env()
    created = h.wait_for(
        lambda: env.create_task("after-renewal", creator=env.agent_api()),
        what="task created through the renewed webhooks",
    )
    assert REQ_KEY in created["metadata"]["annotations"]
