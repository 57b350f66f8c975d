"""CEL mode on the real control plane: what the API server decides without calling a webhook.

The 1.36 apiserver serves admissionregistration.k8s.io/v1 Mutating/ValidatingAdmissionPolicy,
so the operator (TASKWARDEN_ADMISSION_MODE auto or cel) registers admission/cel.py's policies
and gates its AgentTask webhooks with matchConditions. "No webhook call" is proved by the
operator's own counter, taskwarden_admission_requests_total, not moving. The rest of admission
(test_admission.py, test_credential_attacks.py) runs in both modes; `make test` repeats those
files with TASKWARDEN_ADMISSION_MODE=webhook, where this file is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from taskwarden import controlplane
from taskwarden.admission import cel
from tests.integration import helpers as h

pytestmark = pytest.mark.skipif(not h.CEL_MODE, reason="TASKWARDEN_ADMISSION_MODE=webhook")

REQ_KEY = "taskwarden.dev/requester"
TASK_HOOKS = ("mutate-agenttasks", "validate-agenttasks")


def task_calls(operator: h.OperatorProcess) -> dict[str, float]:
    """How often the apiserver has called each AgentTask webhook (any verdict)."""
    return {
        w: operator.metric("taskwarden_admission_requests_total", webhook=w) for w in TASK_HOOKS
    }


def refused(fn: Callable[..., Any], *args: Any) -> tuple[int, str]:
    with pytest.raises(ApiException) as err:
        fn(*args)
    return err.value.status, str(json.loads(err.value.body)["message"])


def test_the_policies_are_registered(api: client.ApiClient, webhooks: None) -> None:
    co = client.CustomObjectsApi(api)
    for obj in cel.policies({}, {}):
        plural = cel.PLURALS[obj["kind"]]
        found = co.get_cluster_custom_object(
            "admissionregistration.k8s.io", "v1", plural, cel.POLICY
        )
        assert found["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "taskwarden"
    vwc = client.AdmissionregistrationV1Api(api).read_validating_webhook_configuration("taskwarden")
    conds = {w.name: w.match_conditions for w in vwc.webhooks}
    assert conds["agenttasks.validate.taskwarden.dev"], "task webhook not gated"
    assert not conds["agentapprovals.validate.taskwarden.dev"], "approvals always go to the webhook"


def test_an_agent_creating_and_completing_its_own_task_calls_no_webhook(
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    env = agent_env()
    me = env.agent_api()  # a real pod-bound ServiceAccount token
    before = task_calls(operator)
    task = env.task("own", creator=me, pod_name="agent-0")
    stamp = json.loads(task.created["metadata"]["annotations"][REQ_KEY])
    assert stamp["username"] == env.username
    assert stamp["podName"] == "agent-0" and stamp["podUID"] == env.pod_uid
    assert f"system:serviceaccounts:{namespace}" in stamp["groups"]
    h.patch(me, namespace, "agenttasks", "own", {"spec": {"completed": True}})
    task.wait("Completed")
    # Creation, the operator's own writes to the task, and completion: no task webhook call.
    assert task_calls(operator) == before


def test_a_forged_requester_is_refused_in_process(
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    me = agent_env().agent_api()
    before = task_calls(operator)
    forged = h.task_body("forged")
    forged["metadata"]["annotations"] = {
        REQ_KEY: json.dumps({"username": "system:serviceaccount:kube-system:admin", "groups": []})
    }
    status, msg = refused(h.create, me, namespace, "agenttasks", forged)
    assert status == 403 and h.POLICY_REFUSAL in msg, msg
    assert f"metadata.annotations[{REQ_KEY}]: set by admission" in msg
    assert "clients cannot set it" in msg
    assert task_calls(operator) == before


def test_changing_the_requester_is_refused_and_removing_it_undone_in_process(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    env = agent_env()
    h.create(env.agent_api(), namespace, "agenttasks", h.task_body("real"))
    original = h.get(api, namespace, "agenttasks", "real")["metadata"]["annotations"][REQ_KEY]
    before = task_calls(operator)
    change = {"metadata": {"annotations": {REQ_KEY: json.dumps({"username": "x", "groups": []})}}}
    status, msg = refused(h.patch, api, namespace, "agenttasks", "real", change)
    assert status == 403 and h.POLICY_REFUSAL in msg and "cannot change or remove it" in msg
    h.patch(api, namespace, "agenttasks", "real", {"metadata": {"annotations": {REQ_KEY: None}}})
    kept = h.get(api, namespace, "agenttasks", "real")["metadata"]["annotations"][REQ_KEY]
    assert kept == original
    # The spec stays immutable (the CRD's own CEL), also without a webhook.
    status, msg = refused(
        h.patch, api, namespace, "agenttasks", "real", {"spec": {"intent": "something else"}}
    )
    assert "spec.intent is immutable" in msg
    assert task_calls(operator) == before


def test_delegation_and_other_requesters_still_go_through_the_webhook(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    policy = h.policy_body(
        actions=("read", "comment"),
        extra={"delegation": {"allowed": True, "maxDepth": 2}},
    )
    env = agent_env(policy=policy)
    me = env.agent_api()
    env.task("parent", creator=me, actions=("read", "comment"))
    before = task_calls(operator)
    kid = h.task_body("kid", ttl="10m", credential_ttl="2m", extra={"delegatedFrom": "parent"})
    h.create(me, namespace, "agenttasks", kid)
    assert task_calls(operator)["validate-agenttasks"] == before["validate-agenttasks"] + 1
    wide = h.task_body(
        "wide", actions=("push",), ttl="10m", credential_ttl="2m", extra={"delegatedFrom": "parent"}
    )
    _, msg = refused(h.create, me, namespace, "agenttasks", wide)
    assert 'admission webhook "agenttasks.validate.taskwarden.dev" denied' in msg
    assert "spec.scopes[0]: github:push:repo:acme/widgets" in msg
    # Another requester, not listed in spec.requesters: the webhook reads the policies.
    h.service_account(api, namespace, "other")
    other = h.agent_api(cluster, api, namespace, "other")
    _, msg = refused(h.create, other, namespace, "agenttasks", h.task_body("stolen"))
    assert 'admission webhook "agenttasks.validate.taskwarden.dev" denied' in msg
    assert f"requester system:serviceaccount:{namespace}:other" in msg


def test_a_user_string_cel_cannot_encode_is_stamped_by_the_webhook(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    env = agent_env()
    group = 'team "blue"'  # a quote: outside cel.SAFE, so the stamp is the webhook's
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "odd-group"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "taskwarden:agent",
            },
            "subjects": [{"kind": "Group", "name": group, "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )
    before = task_calls(operator)
    who = h.as_user(api, env.username, group=group)
    created = h.wait_for(
        lambda: h.create(who, namespace, "agenttasks", h.task_body("odd")), what="RBAC in force"
    )
    stamp = json.loads(created["metadata"]["annotations"][REQ_KEY])
    assert stamp["username"] == env.username and group in stamp["groups"]
    after = task_calls(operator)
    assert after["mutate-agenttasks"] == before["mutate-agenttasks"] + 1
    assert after["validate-agenttasks"] == before["validate-agenttasks"] + 1


def test_with_the_operator_down_the_usual_case_is_admitted_and_the_rest_fails_closed(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    webhooks: None,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    env = agent_env(policy=h.policy_body(extra={"delegation": {"allowed": True, "maxDepth": 2}}))
    me = env.agent_api()
    env.task("parent", creator=me)
    h.service_account(api, namespace, "other")
    other = h.agent_api(cluster, api, namespace, "other")
    operator.stop()
    try:
        made = h.create(me, namespace, "agenttasks", h.task_body("while-down"))
        stamp = json.loads(made["metadata"]["annotations"][REQ_KEY])
        assert stamp["username"] == env.username
        # Delegation, another requester, a forged stamp: refused (failurePolicy Fail or CEL).
        kid = h.task_body("kid", ttl="10m", credential_ttl="2m", extra={"delegatedFrom": "parent"})
        status, msg = refused(h.create, me, namespace, "agenttasks", kid)
        assert status >= 400 and "agenttasks.validate.taskwarden.dev" in msg, msg
        _, msg = refused(h.create, other, namespace, "agenttasks", h.task_body("stolen"))
        assert "agenttasks.validate.taskwarden.dev" in msg, msg
        forged = h.task_body("forged")
        forged["metadata"]["annotations"] = {REQ_KEY: '{"groups":[],"username":"x"}'}
        _, msg = refused(h.create, me, namespace, "agenttasks", forged)
        assert h.POLICY_REFUSAL in msg, msg
    finally:
        operator.start()
    h.wait_phase(api, namespace, "while-down", "Active")
