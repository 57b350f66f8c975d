"""Attacks on a task's credential, tried on the real control plane; each one fails (issue 12).

Each test plays the attacker with real identities: agents use pod-bound ServiceAccount tokens
or impersonation, humans are impersonated. A refusal asserted here comes from a Taskwarden
webhook (its message names the field and the rule), never from RBAC or the CRD schema.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration import helpers as h


def refusal(fn: Any, *args: Any, **kwargs: Any) -> str:
    """Call fn expecting a Taskwarden webhook refusal; return its message."""
    with pytest.raises(ApiException) as err:
        fn(*args, **kwargs)
    body = json.loads(err.value.body)
    assert err.value.status in (400, 403), body
    message = str(body["message"])
    assert h.taskwarden_refusal(message), message
    return message


def foreign_secret(api: client.ApiClient, ns: str, name: str) -> None:
    """Another application's Secret, whose name happens to be `<task>-credential`."""
    client.CoreV1Api(api).create_namespaced_secret(
        ns,
        {
            "metadata": {"name": name},
            "type": "Opaque",
            "data": {"password": base64.b64encode(b"db-password").decode()},
        },
    )


# ------------------------------------------------------------------ 4: deletes only its own


def test_a_task_named_after_someone_elses_secret_is_refused(
    api: client.ApiClient,
    namespace: str,
    agent_env: Callable[..., h.AgentEnv],
    webhooks: None,
) -> None:
    env = agent_env()
    foreign_secret(api, namespace, "db-credential")
    if h.CEL_MODE:
        # CEL cannot read Secrets and the agent's own task calls no webhook: the operator
        # refuses at issuance instead, and never touches the Secret (see admission/cel.py).
        env.create_task("db")
        failed = h.wait_phase(api, namespace, "db", "Failed")
        assert failed["status"]["reason"] == "SecretConflict", failed["status"]
    else:
        message = refusal(env.create_task, "db")
        assert "metadata.name: Secret db-credential already exists" in message
        assert "is not this task's credential Secret" in message
    kept = h.secret_or_none(api, namespace, "db-credential")
    assert kept.type == "Opaque" and base64.b64decode(kept.data["password"]) == b"db-password"


def test_an_ending_task_never_deletes_or_overwrites_a_secret_it_does_not_own(
    api: client.ApiClient,
    namespace: str,
    active_task: Callable[..., h.Task],
    webhooks: None,
) -> None:
    task = active_task("db")
    core = client.CoreV1Api(api)
    # After admission, another application takes the name (the operator never watches Secrets).
    core.delete_namespaced_secret("db-credential", namespace, grace_period_seconds=0)
    h.wait_for(lambda: h.secret_or_none(api, namespace, "db-credential") is None, what="gone")
    foreign_secret(api, namespace, "db-credential")
    h.patch(task.env.as_agent(), namespace, "agenttasks", "db", {"spec": {"completed": True}})
    task.wait("Completed")
    assert task.jti in h.revoked_jtis(api, "taskwarden-system")
    kept = h.secret_or_none(api, namespace, "db-credential")
    assert kept is not None and kept.type == "Opaque"
    assert base64.b64decode(kept.data["password"]) == b"db-password"


# --------------------------------------------------------------------------- 5, 6: approvals


def approval_body(name: str, task: str, spec_hash: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{h.GROUP}/{h.VERSION}",
        "kind": "AgentApproval",
        "metadata": {"name": name},
        "spec": {"taskName": task, "specHash": spec_hash, "decision": "approve", **spec},
    }


def approval_env(agent_env: Callable[..., h.AgentEnv], approvers: list[str]) -> h.AgentEnv:
    extra = {"approvers": approvers, "requesters": ["user:alice"]}
    return agent_env(policy=h.policy_body(approval="required", extra=extra))


def test_a_re_created_task_does_not_inherit_the_approval_of_its_namesake(
    api: client.ApiClient,
    namespace: str,
    agent_env: Callable[..., h.AgentEnv],
    operator: h.OperatorProcess,
    webhooks: None,
) -> None:
    env = approval_env(agent_env, ["user:alice"])
    first = env.task("refund", phase="AwaitingApproval")
    spec_hash = first.status["specHash"]
    alice = h.as_user(api, "alice")
    made = h.create(alice, namespace, "agentapprovals", approval_body("ok", "refund", spec_hash))
    assert made["spec"]["taskUID"] == first.uid  # stamped by admission
    first.wait("Active")
    h.custom(api).delete_namespaced_custom_object(
        h.GROUP, h.VERSION, namespace, "agenttasks", "refund"
    )
    h.wait_for(
        lambda: (
            "refund"
            not in {
                t["metadata"]["name"]
                for t in h.custom(api).list_namespaced_custom_object(
                    h.GROUP, h.VERSION, namespace, "agenttasks"
                )["items"]
            }
        ),
        what="task refund deleted",
    )
    h.wait_for(
        lambda: h.secret_or_none(api, namespace, "refund-credential") is None,
        what="old credential Secret gone",
    )
    # Same name, same spec, well within approvalTTL: the controller judged approval `ok` (it is
    # in its index) and still waits for an approval of this task's own.
    second = env.task("refund", phase="AwaitingApproval")
    assert second.uid != first.uid and second.status["specHash"] == spec_hash
    assert h.get(api, namespace, "agentapprovals", "ok")["spec"]["taskUID"] == first.uid
    # Replaying the first task's UID in a new approval is refused by name of the field.
    message = refusal(
        h.create,
        alice,
        namespace,
        "agentapprovals",
        approval_body("replay", "refund", spec_hash, taskUID=first.uid),
    )
    assert f"spec.taskUID: '{first.uid}' is not the UID {second.uid} of task refund" in message
    assert h.secret_or_none(api, namespace, "refund-credential") is None


def test_a_service_account_cannot_approve_through_a_group(
    cluster: Any,
    api: client.ApiClient,
    namespace: str,
    agent_env: Callable[..., h.AgentEnv],
    operator: h.OperatorProcess,
    webhooks: None,
) -> None:
    env = approval_env(agent_env, [f"group:system:serviceaccounts:{namespace}"])
    task = env.task("deploy", phase="AwaitingApproval")
    spec_hash = task.status["specHash"]
    h.pod(api, namespace, "bot-0", "reviewer")
    bot = h.agent_api(cluster, api, namespace, "reviewer", "bot-0")
    message = refusal(
        h.create, bot, namespace, "agentapprovals", approval_body("bot", "deploy", spec_hash)
    )
    assert f"system:serviceaccount:{namespace}:reviewer is a ServiceAccount" in message
    assert "may approve only when named explicitly, never through a group" in message
    # A human claiming the ServiceAccounts group through impersonation fares no better.
    claimer = h.as_user(api, "mallory", f"system:serviceaccounts:{namespace}")
    message = refusal(
        h.create, claimer, namespace, "agentapprovals", approval_body("m", "deploy", spec_hash)
    )
    assert "request.userInfo.username: mallory is a ServiceAccount" in message
    assert task.phase() == "AwaitingApproval"


def test_the_agent_cannot_approve_its_own_task_even_when_listed_by_name(
    cluster: Any,
    api: client.ApiClient,
    namespace: str,
    agent_env: Callable[..., h.AgentEnv],
    operator: h.OperatorProcess,
    webhooks: None,
) -> None:
    env = approval_env(agent_env, [f"user:system:serviceaccount:{namespace}:agent"])
    task = env.task("escalate", creator=h.as_user(api, "alice"), phase="AwaitingApproval")
    message = refusal(
        h.create,
        env.agent_api(),
        namespace,
        "agentapprovals",
        approval_body("self", "escalate", task.status["specHash"]),
    )
    assert "is the agent of task escalate and cannot approve its own access" in message
    assert task.phase() == "AwaitingApproval"


# ------------------------------------------------------------------ 1, 2, 3: the pod guard


def pod_body(name: str, sa: str, **spec: Any) -> dict[str, Any]:
    containers = spec.pop("containers", [{"name": "c", "image": "busybox"}])
    return {
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": sa,
            "automountServiceAccountToken": False,
            "containers": containers,
            **spec,
        },
    }


def guard_refusal(fn: Any, *args: Any) -> str:
    message = refusal(fn, *args)
    assert 'admission webhook "pods.validate.taskwarden.dev" denied' in message, message
    return message


def env_ref(secret: str) -> list[dict[str, Any]]:
    ref = {"secretKeyRef": {"name": secret, "key": "token"}}
    return [{"name": "TOKEN", "valueFrom": ref}]


READS = {
    "volume": (
        {"volumes": [{"name": "v", "secret": {"secretName": "S"}}]},
        "spec.volumes[0].secret.secretName",
    ),
    "projected": (
        {"volumes": [{"name": "p", "projected": {"sources": [{"secret": {"name": "S"}}]}}]},
        "spec.volumes[0].projected.sources[0].secret.name",
    ),
    "env": (
        {"containers": [{"name": "c", "image": "busybox", "env": env_ref("S")}]},
        "spec.containers[0].env[0].valueFrom.secretKeyRef.name",
    ),
    "init-envFrom": (
        {
            "initContainers": [
                {"name": "i", "image": "busybox", "envFrom": [{"secretRef": {"name": "S"}}]}
            ]
        },
        "spec.initContainers[0].envFrom[0].secretRef.name",
    ),
}


def reading(secret: str, how: str) -> tuple[dict[str, Any], str]:
    spec, path = READS[how]
    return json.loads(json.dumps(spec).replace('"S"', json.dumps(secret))), path


@pytest.mark.parametrize("how", sorted(READS))
def test_another_account_cannot_read_a_task_credential_in_an_unlabelled_namespace(
    api: client.ApiClient,
    namespace: str,
    active_task: Callable[..., h.Task],
    webhooks: None,
    how: str,
) -> None:
    task = active_task("guarded")
    labels = client.CoreV1Api(api).read_namespace(namespace).metadata.labels or {}
    assert not [k for k in labels if k.startswith("taskwarden.dev/")]  # on by default
    h.service_account(api, namespace, "intruder")
    spec, path = reading(task.secret_name, how)
    core = client.CoreV1Api(api)
    message = guard_refusal(
        core.create_namespaced_pod, namespace, pod_body("x", "intruder", **spec)
    )
    assert f"{path}: Secret guarded-credential holds the credential of AgentTask guarded" in message
    assert "runs as intruder (spec.serviceAccountName)" in message


def test_kubectl_debug_cannot_inject_a_task_credential_into_another_accounts_pod(
    api: client.ApiClient,
    namespace: str,
    active_task: Callable[..., h.Task],
    webhooks: None,
) -> None:
    task = active_task("debugged")
    core = client.CoreV1Api(api)
    h.service_account(api, namespace, "intruder")
    core.create_namespaced_pod(namespace, pod_body("victim", "intruder"))
    for i, debugger in enumerate(
        (
            {"env": env_ref(task.secret_name)},
            {"envFrom": [{"secretRef": {"name": task.secret_name}}]},
        )
    ):
        patch = {
            "spec": {
                "ephemeralContainers": [
                    {
                        "name": f"debugger-{i}",
                        "image": "busybox",
                        "targetContainerName": "c",
                        **debugger,
                    }
                ]
            }
        }
        message = guard_refusal(
            core.patch_namespaced_pod_ephemeralcontainers, "victim", namespace, patch
        )
        assert "spec.ephemeralContainers[0]." in message and "runs as intruder" in message
    assert not core.read_namespaced_pod("victim", namespace).spec.ephemeral_containers


def test_a_pod_made_before_its_task_is_refused_until_the_task_exists(
    api: client.ApiClient,
    namespace: str,
    agent_env: Callable[..., h.AgentEnv],
    webhooks: None,
) -> None:
    env = agent_env()
    core = client.CoreV1Api(api)
    h.service_account(api, namespace, "intruder")
    early = pod_body("early", "intruder")
    early["metadata"]["annotations"] = {"taskwarden.dev/task": "later"}
    message = guard_refusal(core.create_namespaced_pod, namespace, early)
    assert (
        "spec.volumes[0].secret.secretName: Secret later-credential is the credential of "
        f"AgentTask later, which does not exist in namespace {namespace}"
    ) in message
    spec, path = reading("later-credential", "env")
    message = guard_refusal(
        core.create_namespaced_pod, namespace, pod_body("e", "intruder", **spec)
    )
    assert f"{path}: Secret later-credential is the credential of AgentTask later" in message
    # Another application's Secret that merely ends in -credential is not a task's.
    foreign_secret(api, namespace, "db-credential")
    spec, _ = reading("db-credential", "volume")
    core.create_namespaced_pod(namespace, pod_body("db-client", "intruder", **spec))
    # Once the task exists, its own agent's pod is admitted, and still no other.
    env.create_task("later")
    ok = pod_body("agent-later", env.sa)
    ok["metadata"]["annotations"] = {"taskwarden.dev/task": "later"}
    core.create_namespaced_pod(namespace, ok)
    message = guard_refusal(core.create_namespaced_pod, namespace, early)
    assert "holds the credential of AgentTask later" in message


def test_a_namespace_opts_out_of_the_guard_only_with_the_documented_label(
    api: client.ApiClient,
    namespace: str,
    operator_namespace: str,
    active_task: Callable[..., h.Task],
    webhooks: None,
) -> None:
    task = active_task("optout")
    core = client.CoreV1Api(api)
    h.service_account(api, namespace, "intruder")
    spec, _ = reading(task.secret_name, "volume")
    guard_refusal(core.create_namespaced_pod, namespace, pod_body("before", "intruder", **spec))
    core.patch_namespace(namespace, {"metadata": {"labels": {"taskwarden.dev/guard": "off"}}})
    # Any other value keeps it on.
    guard_refusal(core.create_namespaced_pod, namespace, pod_body("still", "intruder", **spec))
    core.patch_namespace(namespace, {"metadata": {"labels": {"taskwarden.dev/guard": "disabled"}}})

    def admitted() -> bool:
        try:
            core.create_namespaced_pod(namespace, pod_body("after", "intruder", **spec))
        except ApiException as e:
            assert e.status == 403, e.body
            return False
        return True

    h.wait_for(admitted, timeout=20, interval=0.2, what="the opt-out label seen by the apiserver")
    # Never applied in kube-system or the operator's namespace (the configuration says so).
    adm = client.AdmissionregistrationV1Api(api)
    conf = adm.read_validating_webhook_configuration("taskwarden")
    guard = next(w for w in conf.webhooks if w.name == "pods.validate.taskwarden.dev")
    never = next(
        e
        for e in guard.namespace_selector.match_expressions
        if e.key == "kubernetes.io/metadata.name"
    )
    assert never.operator == "NotIn" and {"kube-system", operator_namespace} <= set(never.values)
