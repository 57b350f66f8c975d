"""Admission reviews decide each rule with one clear sentence naming field and rule.

Pure: AdmissionReview dicts in, AdmissionReview responses out; what the API would return is
passed in as `admission.Facts`. Also covers the webhook configurations and the TLS material.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from typing import Any

import pytest
from cryptography import x509

from taskwarden import admission, approvals, config, pki, policy
from taskwarden.kube import ApiError
from taskwarden.server import tls, webhook_config

NS = "agents"
AGENT = f"system:serviceaccount:{NS}:agent"
ORCH = f"system:serviceaccount:{NS}:orchestrator"
SA_GROUPS = ["system:serviceaccounts", f"system:serviceaccounts:{NS}", "system:authenticated"]
POD_EXTRA = {
    "authentication.kubernetes.io/pod-name": ["agent-0"],
    "authentication.kubernetes.io/pod-uid": ["uid-123"],
}
GH = "https://api.github.com"
REQ_KEY = "taskwarden.dev/requester"
APPR_KEY = "taskwarden.dev/approver"


# --------------------------------------------------------------------------- builders


def review_body(
    kind: str,
    obj: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    username: str = AGENT,
    groups: list[str] | None = None,
    extra: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    group, version = ("", "v1") if kind == "Pod" else ("taskwarden.dev", "v1alpha1")
    request: dict[str, Any] = {
        "uid": "req-1",
        "kind": {"group": group, "version": version, "kind": kind},
        "operation": operation,
        "namespace": NS,
        "name": ((obj or {}).get("metadata") or {}).get("name", ""),
        "userInfo": {
            "username": username,
            "groups": SA_GROUPS if groups is None else groups,
            "extra": POD_EXTRA if extra is None else extra,
        },
        "object": obj,
        "oldObject": old,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def task_obj(
    name: str = "triage",
    *,
    sa: str = "agent",
    annotations: dict[str, str] | None = None,
    **spec_overrides: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "agent": {"serviceAccountName": sa},
        "intent": "triage",
        "scopes": [
            {"tool": "github", "actions": ["read", "comment"], "resources": ["repo:acme/*"]}
        ],
        "audiences": [GH],
        "dataClass": "internal",
        "ttl": "30m",
    }
    spec.update(spec_overrides)
    md: dict[str, Any] = {"name": name, "namespace": NS}
    if annotations is not None:
        md["annotations"] = annotations
    return {
        "apiVersion": "taskwarden.dev/v1alpha1",
        "kind": "AgentTask",
        "metadata": md,
        "spec": spec,
    }


def policy_obj(name: str = "agents", **spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "subjects": {"serviceAccounts": ["agent"]},
        "rules": [
            {
                "tool": "github",
                "actions": ["read", "comment"],
                "resources": ["repo:acme/*"],
                "audiences": [GH],
                "maxDataClass": "confidential",
                "approval": "required",
            }
        ],
        "requesters": [ORCH, "group:orchestrators"],
        "approvers": ["user:alice", "group:sre"],
        "delegation": {"allowed": True, "maxDepth": 2},
        "approvalTTL": "15m",
    }
    spec.update(spec_overrides)
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


def stamp(username: str = AGENT, groups: list[str] | None = None, pod: bool = True) -> str:
    body: dict[str, Any] = {"username": username, "groups": SA_GROUPS if groups is None else groups}
    if pod:
        body.update(podName="agent-0", podUID="uid-123")
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def stamped_task(name: str = "triage", username: str = AGENT, **kw: Any) -> dict[str, Any]:
    return task_obj(name, annotations={REQ_KEY: stamp(username)}, **kw)


def response(webhook: str, body: Any, facts: admission.Facts | None = None) -> dict[str, Any]:
    """The review's answer; Secrets it needs and `facts` did not read are absent (None), as the
    server reads them in a namespace without them."""
    facts = facts or admission.Facts()
    need = admission.needs(webhook, body)
    if need is not None and any(n not in facts.secrets for n in need.secrets):
        absent = {n: None for n in need.secrets}
        facts = dataclasses.replace(facts, secrets={**absent, **facts.secrets})
    out = admission.review(webhook, body, facts)
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    return dict(out["response"])


def allowed(webhook: str, body: Any, facts: admission.Facts | None = None) -> dict[str, Any]:
    r = response(webhook, body, facts)
    assert r["allowed"] is True, r.get("status")
    return r


def denied(webhook: str, body: Any, facts: admission.Facts | None = None) -> str:
    r = response(webhook, body, facts)
    assert r["allowed"] is False, r
    assert r["status"]["code"] in (400, 403, 404)
    return str(r["status"]["message"])


def patch_of(r: dict[str, Any]) -> list[dict[str, Any]]:
    if "patch" not in r:
        return []
    assert r["patchType"] == "JSONPatch"
    return list(json.loads(base64.b64decode(r["patch"])))


def apply_patch(obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Just enough RFC 6902 `add` to check the patches really produce what we expect."""
    doc = copy.deepcopy(obj)
    for op in ops:
        assert op["op"] == "add"
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target: Any = doc
        for p in parts[:-1]:
            target = target[int(p)] if isinstance(target, list) else target[p]
        last = parts[-1]
        if isinstance(target, list):
            target.append(op["value"]) if last == "-" else target.insert(int(last), op["value"])
        else:
            target[last] = op["value"]
    return doc


POLICIES = admission.Facts(policies=(policy_obj(),))


# --------------------------------------------------------------------------- AgentTask: mutation


def test_task_creation_is_stamped_with_user_and_pod() -> None:
    body = review_body("AgentTask", task_obj())
    r = allowed(admission.MUTATE_TASKS, body)
    out = apply_patch(body["request"]["object"], patch_of(r))
    stamped = json.loads(out["metadata"]["annotations"][REQ_KEY])
    assert stamped == {
        "username": AGENT,
        "groups": SA_GROUPS,
        "podName": "agent-0",
        "podUID": "uid-123",
    }


def test_stamp_is_added_next_to_existing_annotations() -> None:
    body = review_body("AgentTask", task_obj(annotations={"team": "a"}))
    ops = patch_of(allowed(admission.MUTATE_TASKS, body))
    assert ops == [
        {"op": "add", "path": "/metadata/annotations/taskwarden.dev~1requester", "value": stamp()}
    ]


def test_stamp_without_pod_token_has_no_pod_fields() -> None:
    body = review_body("AgentTask", task_obj(), username="alice", groups=["dev"], extra={})
    out = apply_patch(body["request"]["object"], patch_of(allowed(admission.MUTATE_TASKS, body)))
    assert json.loads(out["metadata"]["annotations"][REQ_KEY]) == {
        "username": "alice",
        "groups": ["dev"],
    }


@pytest.mark.parametrize(
    "value",
    [
        json.dumps({"username": "system:serviceaccount:agents:admin", "groups": []}),
        "orchestrator",
        "",
    ],
)
def test_client_set_requester_is_refused_by_mutation(value: str) -> None:
    body = review_body("AgentTask", task_obj(annotations={REQ_KEY: value}))
    msg = denied(admission.MUTATE_TASKS, body)
    assert msg == (
        "metadata.annotations[taskwarden.dev/requester]: set by admission from the authenticated "
        "user who created the task; clients cannot set it"
    )


def test_identical_stamp_is_accepted_without_patch() -> None:
    body = review_body("AgentTask", stamped_task())
    assert patch_of(allowed(admission.MUTATE_TASKS, body)) == []


def test_update_dropping_the_stamp_restores_it() -> None:
    old = stamped_task()
    body = review_body("AgentTask", task_obj(annotations={}), operation="UPDATE", old=old)
    out = apply_patch(body["request"]["object"], patch_of(allowed(admission.MUTATE_TASKS, body)))
    assert out["metadata"]["annotations"][REQ_KEY] == stamp()


def test_unauthenticated_creation_is_refused() -> None:
    body = review_body("AgentTask", task_obj(), username="")
    assert denied(admission.MUTATE_TASKS, body).startswith("request.userInfo.username")


# --------------------------------------------------------------------------- AgentTask: validation


def test_agent_may_create_its_own_task() -> None:
    allowed(admission.VALIDATE_TASKS, review_body("AgentTask", stamped_task()), admission.Facts())


@pytest.mark.parametrize(
    ("username", "groups", "ok"),
    [
        (ORCH, SA_GROUPS, True),  # listed by name
        ("carol", ["orchestrators"], True),  # listed by group
        ("mallory", ["dev"], False),
        (f"system:serviceaccount:{NS}:other", SA_GROUPS, False),
        ("system:serviceaccount:elsewhere:agent", SA_GROUPS, False),  # same name, other ns
    ],
)
def test_requester_must_be_the_agent_or_listed(username: str, groups: list[str], ok: bool) -> None:
    obj = task_obj(annotations={REQ_KEY: stamp(username, groups, pod=False)})
    body = review_body("AgentTask", obj, username=username, groups=groups, extra={})
    if ok:
        allowed(admission.VALIDATE_TASKS, body, POLICIES)
    else:
        msg = denied(admission.VALIDATE_TASKS, body, POLICIES)
        assert msg.startswith(f"requester {username} in metadata.annotations[taskwarden.dev/")
        assert "spec.requesters" in msg


def test_requesters_of_a_policy_that_does_not_cover_the_task_do_not_count() -> None:
    narrow = policy_obj(rules=[{**policy_obj()["spec"]["rules"][0], "resources": ["repo:x/*"]}])
    obj = task_obj(annotations={REQ_KEY: stamp(ORCH, pod=False)})
    body = review_body("AgentTask", obj, username=ORCH, extra={})
    msg = denied(admission.VALIDATE_TASKS, body, admission.Facts(policies=(narrow,)))
    assert "no AgentPolicy covers the task" in msg


def test_validation_refuses_a_stamp_for_someone_else() -> None:
    obj = task_obj(annotations={REQ_KEY: stamp(ORCH)})
    msg = denied(admission.VALIDATE_TASKS, review_body("AgentTask", obj), POLICIES)
    assert msg.startswith("metadata.annotations[taskwarden.dev/requester]: set by admission")


def test_validation_refuses_a_missing_stamp() -> None:
    msg = denied(admission.VALIDATE_TASKS, review_body("AgentTask", task_obj()), POLICIES)
    assert msg.startswith("metadata.annotations[taskwarden.dev/requester]: missing")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"scopes": []}, "spec.scopes"),
        ({"audiences": "x"}, "spec.audiences"),
        ({"dataClass": "secret"}, "spec.dataClass"),
        ({"ttl": "soon"}, "spec.ttl"),
        ({"agent": {}}, "spec.agent.serviceAccountName"),
        ({"scopes": [{"tool": "github", "actions": [], "resources": ["r"]}]}, "spec.scopes[0]"),
    ],
)
def test_invalid_spec_is_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    obj = stamped_task(**spec)
    msg = denied(admission.VALIDATE_TASKS, review_body("AgentTask", obj), POLICIES)
    assert field in msg


def test_update_may_only_complete_the_task() -> None:
    old = stamped_task()
    new = copy.deepcopy(old)
    new["spec"]["completed"] = True
    allowed(admission.VALIDATE_TASKS, review_body("AgentTask", new, operation="UPDATE", old=old))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"intent": "something else"}, "spec.intent"),
        ({"audiences": [GH, "https://evil"]}, "spec.audiences"),
        ({"delegatedFrom": "other"}, "spec.delegatedFrom"),
    ],
)
def test_update_of_the_spec_is_refused(change: dict[str, Any], field: str) -> None:
    old = stamped_task()
    new = copy.deepcopy(old)
    new["spec"].update(change)
    msg = denied(
        admission.VALIDATE_TASKS, review_body("AgentTask", new, operation="UPDATE", old=old)
    )
    assert msg.startswith(f"{field}: the spec of an AgentTask is immutable")


def test_completed_cannot_be_reopened() -> None:
    old = stamped_task(completed=True)
    new = copy.deepcopy(old)
    new["spec"]["completed"] = False
    msg = denied(
        admission.VALIDATE_TASKS, review_body("AgentTask", new, operation="UPDATE", old=old)
    )
    assert msg.startswith("spec.completed may only change from false to true")


@pytest.mark.parametrize("value", [stamp(ORCH), None])
def test_update_changing_or_removing_the_requester_is_refused(value: str | None) -> None:
    old = stamped_task()
    new = copy.deepcopy(old)
    if value is None:
        del new["metadata"]["annotations"][REQ_KEY]
    else:
        new["metadata"]["annotations"][REQ_KEY] = value
    msg = denied(
        admission.VALIDATE_TASKS, review_body("AgentTask", new, operation="UPDATE", old=old)
    )
    assert "clients cannot change or remove it" in msg


def test_read_errors_fail_closed() -> None:
    facts = admission.Facts(error="could not read AgentPolicies (500 boom); try again")
    msg = denied(admission.VALIDATE_TASKS, review_body("AgentTask", stamped_task()), facts)
    assert msg.startswith("request.namespace: could not read")


# --------------------------------------------------------------------------- delegation


def parent_task(
    name: str = "parent", *, phase: str = "Active", delegated_from: str | None = None, **kw: Any
) -> dict[str, Any]:
    t = stamped_task(name, **kw)
    if delegated_from:
        t["spec"]["delegatedFrom"] = delegated_from
    t["status"] = {"phase": phase, "decision": {"policy": "agents"}}
    return t


def child_body(**spec: Any) -> dict[str, Any]:
    obj = stamped_task("child", delegatedFrom="parent", **spec)
    return review_body("AgentTask", obj)


def chain_facts(*tasks: dict[str, Any], pol: dict[str, Any] | None = None) -> admission.Facts:
    return admission.Facts(
        policies=(pol or policy_obj(),), tasks={t["metadata"]["name"]: t for t in tasks}
    )


def test_narrowing_child_is_allowed() -> None:
    body = child_body(
        scopes=[{"tool": "github", "actions": ["read"], "resources": ["repo:acme/w"]}]
    )
    allowed(admission.VALIDATE_TASKS, body, chain_facts(parent_task()))


def test_needs_asks_for_the_parent_chain_policies_and_the_credential_secret() -> None:
    need = admission.needs(admission.VALIDATE_TASKS, child_body())
    assert need == admission.Needs(
        NS,
        policies=True,
        tasks=("parent",),
        follow_delegation=True,
        secrets=("child-credential",),
    )
    assert admission.needs(admission.MUTATE_TASKS, child_body()) is None


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (
            {"scopes": [{"tool": "slack", "actions": ["read"], "resources": ["c"]}]},
            "spec.scopes[0]",
        ),
        (
            {"scopes": [{"tool": "github", "actions": ["push"], "resources": ["repo:acme/w"]}]},
            "spec.scopes[0]",
        ),
        (
            {"scopes": [{"tool": "github", "actions": ["read"], "resources": ["repo:*/*"]}]},
            "spec.scopes[0]",
        ),
        ({"audiences": ["https://other"]}, "spec.audiences"),
        ({"dataClass": "confidential"}, "spec.dataClass"),
    ],
)
def test_widening_child_is_refused(spec: dict[str, Any], field: str) -> None:
    msg = denied(admission.VALIDATE_TASKS, child_body(**spec), chain_facts(parent_task()))
    assert msg.startswith(f"{field}:") and "parent" in msg


def test_depth_beyond_max_depth_is_refused() -> None:
    facts = chain_facts(
        parent_task("parent", delegated_from="mid"),
        parent_task("mid", delegated_from="root"),
        parent_task("root"),
    )
    msg = denied(admission.VALIDATE_TASKS, child_body(), facts)
    assert msg.startswith("spec.delegatedFrom: delegation depth 3 exceeds delegation.maxDepth 2")
    facts2 = chain_facts(parent_task("parent", delegated_from="root"), parent_task("root"))
    allowed(admission.VALIDATE_TASKS, child_body(), facts2)


def test_chain_longer_than_read_counts_as_too_deep() -> None:
    facts = chain_facts(parent_task("parent", delegated_from="unread"))
    assert "exceeds delegation.maxDepth" in denied(admission.VALIDATE_TASKS, child_body(), facts)


def test_looping_chain_is_refused() -> None:
    facts = chain_facts(
        parent_task("parent", delegated_from="a"), parent_task("a", delegated_from="parent")
    )
    assert "loops" in denied(admission.VALIDATE_TASKS, child_body(), facts)


@pytest.mark.parametrize(
    ("facts", "text"),
    [
        (admission.Facts(policies=(policy_obj(),), tasks={"parent": None}), "does not exist"),
        (chain_facts(parent_task(phase="Revoked")), "is Revoked"),
        (chain_facts(parent_task(completed=True)), "is completed"),
        (
            chain_facts(parent_task(), pol=policy_obj(delegation={"allowed": False})),
            "does not allow delegation (spec.delegation.allowed)",
        ),
        (
            admission.Facts(
                policies=(policy_obj(),),
                tasks={"parent": parent_task("parent", delegated_from="gone"), "gone": None},
            ),
            "chain is broken",
        ),
    ],
)
def test_delegation_needs_a_live_parent_allowing_it(facts: admission.Facts, text: str) -> None:
    msg = denied(admission.VALIDATE_TASKS, child_body(), facts)
    assert msg.startswith("spec.delegatedFrom:") and text in msg


def request_of(task: dict[str, Any]) -> policy.TaskRequest:
    return policy.task_request(NS, task["metadata"]["name"], task["spec"])


@pytest.mark.parametrize(
    ("chain", "verdict"),
    [
        ({"parent": parent_task()}, None),
        ({"parent": parent_task(delegated_from="root"), "root": parent_task("root")}, None),
        (
            {
                "parent": parent_task(delegated_from="mid"),
                "mid": parent_task("mid", delegated_from="root"),
                "root": parent_task("root"),
            },
            "delegation depth 3 exceeds delegation.maxDepth 2",
        ),
        ({"parent": parent_task(delegated_from="unread")}, "exceeds delegation.maxDepth"),
        (
            {
                "parent": parent_task(delegated_from="a"),
                "a": parent_task("a", delegated_from="parent"),
            },
            "the delegation chain above parent loops",
        ),
        ({"parent": parent_task(delegated_from="gone"), "gone": None}, "chain is broken"),
    ],
)
def test_the_task_review_decides_delegation_from_the_gathered_chain(
    chain: dict[str, Any], verdict: str | None
) -> None:
    """Policy, parent and chain in (as the server gathered them), verdict out: the review makes
    the one delegation decision, policy.delegation.decide, that the task controller makes too."""
    facts = admission.Facts(policies=(policy_obj(),), tasks=chain)
    if verdict is None:
        allowed(admission.VALIDATE_TASKS, child_body(), facts)
    else:
        got = denied(admission.VALIDATE_TASKS, child_body(), facts)
        assert got.startswith("spec.delegatedFrom:") and verdict in got


def test_parent_without_recorded_decision_uses_the_policy_that_would_decide() -> None:
    p = parent_task()
    del p["status"]["decision"]
    allowed(admission.VALIDATE_TASKS, child_body(), chain_facts(p))
    other = {"metadata": {"name": "zz"}, "spec": {"subjects": {"serviceAccounts": ["x"]}}}
    msg = denied(admission.VALIDATE_TASKS, child_body(), admission.Facts((other,), {"parent": p}))
    assert "no AgentPolicy in namespace agents allows parent task parent" in msg


def test_delegated_task_must_be_created_by_the_parent_agent() -> None:
    obj = task_obj("child", annotations={REQ_KEY: stamp(ORCH)}, delegatedFrom="parent")
    body = review_body("AgentTask", obj, username=ORCH)
    msg = denied(admission.VALIDATE_TASKS, body, chain_facts(parent_task()))
    assert msg.startswith("metadata.annotations[taskwarden.dev/requester]: a delegated task")
    assert AGENT in msg


# --------------------------------------------------------------------------- AgentApproval


TASK_UID = "0b7c-refund-uid"


def approval_obj(
    task: str = "refund",
    spec_hash: str | None = None,
    decision: str = "approve",
    annotations: dict[str, str] | None = None,
    task_uid: str | None = TASK_UID,
) -> dict[str, Any]:
    md: dict[str, Any] = {"name": f"{task}-ok", "namespace": NS}
    if annotations is not None:
        md["annotations"] = annotations
    return {
        "apiVersion": "taskwarden.dev/v1alpha1",
        "kind": "AgentApproval",
        "metadata": md,
        "spec": {
            "taskName": task,
            "specHash": spec_hash or policy.spec_hash(TASK_SPEC),
            "decision": decision,
            "reason": "ok",
            **({"taskUID": task_uid} if task_uid is not None else {}),
        },
    }


TASK_SPEC = stamped_task("refund")["spec"]


def target_task(requester: str = AGENT, phase: str = "AwaitingApproval") -> dict[str, Any]:
    t = stamped_task("refund", username=requester)
    t["metadata"]["uid"] = TASK_UID
    t["status"] = {"phase": phase, "specHash": policy.spec_hash(t["spec"])}
    return t


def approver_body(
    username: str = "alice", groups: list[str] | None = None, **kw: Any
) -> dict[str, Any]:
    groups = ["system:authenticated"] if groups is None else groups
    principal = json.dumps(
        {"username": username, "groups": groups}, sort_keys=True, separators=(",", ":")
    )
    obj = approval_obj(annotations={APPR_KEY: principal}, **kw)
    return review_body("AgentApproval", obj, username=username, groups=groups, extra={})


def approval_facts(task: dict[str, Any] | None = None, **pol: Any) -> admission.Facts:
    return admission.Facts(
        policies=(policy_obj(**pol),), tasks={"refund": task if task is not None else target_task()}
    )


def test_approval_is_stamped_with_the_approver() -> None:
    body = review_body("AgentApproval", approval_obj(), username="alice", groups=["sre"], extra={})
    out = apply_patch(
        body["request"]["object"], patch_of(allowed(admission.MUTATE_APPROVALS, body))
    )
    assert json.loads(out["metadata"]["annotations"][APPR_KEY]) == {
        "username": "alice",
        "groups": ["sre"],
    }


def test_client_set_approver_is_refused() -> None:
    forged = json.dumps({"username": "alice", "groups": []})
    body = review_body(
        "AgentApproval", approval_obj(annotations={APPR_KEY: forged}), username="bob"
    )
    assert denied(admission.MUTATE_APPROVALS, body) == (
        "metadata.annotations[taskwarden.dev/approver]: set by admission from the authenticated "
        "approver; clients cannot set it"
    )


@pytest.mark.parametrize(
    ("username", "groups"), [("alice", ["system:authenticated"]), ("dave", ["sre"])]
)
def test_listed_approver_may_approve(username: str, groups: list[str]) -> None:
    allowed(admission.VALIDATE_APPROVALS, approver_body(username, groups), approval_facts())


def test_needs_asks_for_the_task_and_policies() -> None:
    assert admission.needs(admission.VALIDATE_APPROVALS, approver_body()) == admission.Needs(
        NS, policies=True, tasks=("refund",)
    )
    assert admission.needs(admission.MUTATE_APPROVALS, approver_body()) == admission.Needs(
        NS, tasks=("refund",)
    )


def test_approval_is_stamped_with_the_uid_of_the_task_it_names() -> None:
    body = review_body(
        "AgentApproval", approval_obj(task_uid=None), username="alice", groups=["sre"], extra={}
    )
    out = apply_patch(
        body["request"]["object"],
        patch_of(allowed(admission.MUTATE_APPROVALS, body, approval_facts())),
    )
    assert out["spec"]["taskUID"] == TASK_UID


@pytest.mark.parametrize("task_uid", [None, "uid-of-a-deleted-refund"])
def test_an_approval_bound_to_another_task_uid_is_refused(task_uid: str | None) -> None:
    message = denied(
        admission.VALIDATE_APPROVALS, approver_body(task_uid=task_uid), approval_facts()
    )
    assert message.startswith(f"spec.taskUID: {task_uid!r} is not the UID {TASK_UID}")


@pytest.mark.parametrize(
    "groups",
    [
        ["system:serviceaccounts", "system:serviceaccounts:agents", "system:authenticated"],
        ["sre", "system:serviceaccounts"],
    ],
)
def test_a_service_account_approves_only_when_named_explicitly(groups: list[str]) -> None:
    bot = f"system:serviceaccount:{NS}:reviewer"
    by_group = approval_facts(approvers=["group:system:serviceaccounts", "group:sre"])
    message = denied(admission.VALIDATE_APPROVALS, approver_body(bot, groups), by_group)
    assert message.startswith(f"request.userInfo.username: {bot} is a ServiceAccount")
    assert "may approve only when named explicitly, never through a group" in message
    named = approval_facts(approvers=[f"user:{bot}"])
    allowed(admission.VALIDATE_APPROVALS, approver_body(bot, groups), named)


@pytest.mark.parametrize(
    ("body", "facts", "start", "text"),
    [
        (
            approver_body("mallory"),
            approval_facts(),
            "request.userInfo.username",
            "not listed in spec.approvers of policy agents",
        ),
        (
            approver_body(),
            approval_facts(target_task(requester="alice")),
            "request.userInfo.username",
            "separation of duties",
        ),
        (
            approver_body(AGENT),
            approval_facts(target_task(requester=ORCH), approvers=[f"user:{AGENT}"]),
            "request.userInfo.username",
            "cannot approve its own access",
        ),
        (
            approver_body(spec_hash="sha256:" + "0" * 64),
            approval_facts(),
            "spec.specHash",
            "does not match status.specHash",
        ),
        (
            approver_body(),
            admission.Facts(policies=(policy_obj(),), tasks={"refund": None}),
            "spec.taskName",
            "does not exist",
        ),
        (
            approver_body(),
            approval_facts(target_task(phase="Expired")),
            "spec.taskName",
            "is Expired",
        ),
        (
            approver_body(),
            approval_facts(subjects={"serviceAccounts": ["x"]}),
            "spec.taskName",
            "nothing to approve",
        ),
        (approver_body(decision="maybe"), approval_facts(), "spec.decision", "approve or deny"),
    ],
)
def test_approval_rules(
    body: dict[str, Any], facts: admission.Facts, start: str, text: str
) -> None:
    msg = denied(admission.VALIDATE_APPROVALS, body, facts)
    assert msg.startswith(start) and text in msg, msg


def test_approval_update_cannot_change_the_approver_or_spec() -> None:
    old = approver_body()["request"]["object"]
    new = copy.deepcopy(old)
    new["metadata"]["annotations"][APPR_KEY] = json.dumps({"username": "root", "groups": []})
    body = review_body("AgentApproval", new, operation="UPDATE", old=old, username="x")
    assert "cannot change or remove it" in denied(admission.VALIDATE_APPROVALS, body)
    new = copy.deepcopy(old)
    new["spec"]["decision"] = "deny"
    body = review_body("AgentApproval", new, operation="UPDATE", old=old, username="x")
    assert denied(admission.VALIDATE_APPROVALS, body).startswith(
        "spec.decision: an AgentApproval is immutable"
    )


def approval_with_meta(created: str, username: str = "alice", **kw: Any) -> dict[str, Any]:
    a = approver_body(username, **kw)["request"]["object"]
    a["metadata"]["creationTimestamp"] = created
    return a


def test_approval_status_is_valid_until_the_policy_approval_ttl() -> None:
    a = approval_with_meta("2030-01-01T00:00:00Z")
    t0 = 1893456000.0  # 2030-01-01T00:00:00Z
    st = approvals.status(a, target_task(), [policy_obj(approvalTTL="10s")], t0 + 5)
    assert st == {
        "approver": "user:alice",
        "approvedAt": "2030-01-01T00:00:00Z",
        "expiresAt": "2030-01-01T00:00:10Z",
        "valid": True,
        "reason": "Valid: approved by alice",
    }
    st = approvals.status(a, target_task(), [policy_obj(approvalTTL="10s")], t0 + 11)
    assert st["valid"] is False and st["reason"].startswith("Expired:")


@pytest.mark.parametrize(
    ("approval", "task", "code"),
    [
        (
            approval_with_meta("2030-01-01T00:00:00Z", spec_hash="sha256:" + "1" * 64),
            target_task(),
            "SpecHashMismatch",
        ),
        (
            approval_with_meta("2030-01-01T00:00:00Z"),
            target_task(requester="alice"),
            "SelfApproval",
        ),
        (
            approval_with_meta("2030-01-01T00:00:00Z", username="bob"),
            target_task(),
            "NotAnApprover",
        ),
        (approval_with_meta("2030-01-01T00:00:00Z"), None, "TaskNotFound"),
    ],
)
def test_approval_status_explains_invalid_approvals(
    approval: dict[str, Any], task: dict[str, Any] | None, code: str
) -> None:
    st = approvals.status(approval, task, [policy_obj()], 1893456001.0)
    assert st["valid"] is False and st["reason"].startswith(code + ":"), st


def test_approval_status_code_comes_from_the_judgement_not_the_words() -> None:
    """A username that contains another code's keyword cannot change the code."""
    a = approval_with_meta("2030-01-01T00:00:00Z", username="expired-specHash")
    st = approvals.status(a, target_task(), [policy_obj()], 1893456001.0)
    assert st["reason"] == (
        "NotAnApprover: expired-specHash is not listed in the policy's spec.approvers"
    )


# --------------------------------------------------------------------------- Pods


def pod_obj(
    *,
    task: str | None = "triage",
    sa: str = "agent",
    volumes: list[dict[str, Any]] | None = None,
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": sa,
        "containers": containers if containers is not None else [{"name": "a", "image": "x"}],
    }
    if init is not None:
        spec["initContainers"] = init
    if volumes is not None:
        spec["volumes"] = volumes
    md: dict[str, Any] = {"name": "agent-0", "namespace": NS}
    if task is not None:
        md["annotations"] = {"taskwarden.dev/task": task}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}


MOUNT = {
    "name": "taskwarden-credential",
    "mountPath": "/var/run/secrets/taskwarden.dev/",
    "readOnly": True,
}
ENV = {"name": "TASKWARDEN_TOKEN_FILE", "value": "/var/run/secrets/taskwarden.dev/token"}
VOLUME = {
    "name": "taskwarden-credential",
    "secret": {"secretName": "triage-credential", "optional": True},
}


def mutated_pod(obj: dict[str, Any]) -> dict[str, Any]:
    body = review_body("Pod", obj, username="admin", extra={})
    return apply_patch(obj, patch_of(allowed(admission.MUTATE_PODS, body)))


def test_annotated_pod_gets_volume_mount_and_env_in_every_container() -> None:
    pod = mutated_pod(
        pod_obj(
            containers=[
                {"name": "a", "image": "x", "env": [{"name": "X", "value": "1"}]},
                {"name": "b", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/d"}]},
            ],
            init=[{"name": "i", "image": "x"}],
            volumes=[{"name": "data", "emptyDir": {}}],
        )
    )
    assert pod["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}, VOLUME]
    for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]:
        assert c["volumeMounts"].count(MOUNT) == 1
        assert c["env"].count(ENV) == 1
    assert pod["spec"]["containers"][0]["env"][0] == {"name": "X", "value": "1"}


def test_pod_mutation_is_idempotent() -> None:
    once = mutated_pod(pod_obj())
    assert mutated_pod(once) == once


def test_pod_without_annotation_is_untouched() -> None:
    body = review_body("Pod", pod_obj(task=None), username="admin", extra={})
    assert patch_of(allowed(admission.MUTATE_PODS, body)) == []


@pytest.mark.parametrize("task", ["../etc", "UPPER", "", "a" * 64])
def test_pod_with_invalid_task_annotation_is_refused(task: str) -> None:
    body = review_body("Pod", pod_obj(task=task), username="admin", extra={})
    assert denied(admission.MUTATE_PODS, body).startswith(
        "metadata.annotations[taskwarden.dev/task]:"
    )


def task_facts(sa: str = "agent") -> admission.Facts:
    return admission.Facts(tasks={"triage": task_obj(sa=sa)})


@pytest.mark.parametrize(
    ("pod", "field"),
    [
        (pod_obj(sa="intruder", volumes=[VOLUME]), "spec.volumes[0].secret.secretName"),
        (
            pod_obj(
                sa="intruder",
                volumes=[
                    {
                        "name": "p",
                        "projected": {"sources": [{"secret": {"name": "triage-credential"}}]},
                    }
                ],
            ),
            "spec.volumes[0].projected.sources[0].secret.name",
        ),
        (
            pod_obj(
                sa="intruder",
                containers=[
                    {
                        "name": "a",
                        "env": [
                            {
                                "name": "T",
                                "valueFrom": {
                                    "secretKeyRef": {"name": "triage-credential", "key": "token"}
                                },
                            }
                        ],
                    }
                ],
            ),
            "spec.containers[0].env[0].valueFrom.secretKeyRef.name",
        ),
        (
            pod_obj(
                sa="intruder",
                init=[{"name": "i", "envFrom": [{"secretRef": {"name": "triage-credential"}}]}],
            ),
            "spec.initContainers[0].envFrom[0].secretRef.name",
        ),
        (
            {
                **pod_obj(sa="intruder"),
                "spec": {
                    **pod_obj(sa="intruder")["spec"],
                    "ephemeralContainers": [
                        {"name": "debug", "envFrom": [{"secretRef": {"name": "triage-credential"}}]}
                    ],
                },
            },
            "spec.ephemeralContainers[0].envFrom[0].secretRef.name",
        ),
    ],
)
def test_pod_of_another_account_cannot_use_a_task_credential(
    pod: dict[str, Any], field: str
) -> None:
    body = review_body("Pod", pod, username="admin", extra={})
    assert admission.needs(admission.VALIDATE_PODS, body) == admission.Needs(
        NS, tasks=("triage",), secrets=("triage-credential",)
    )
    msg = denied(admission.VALIDATE_PODS, body, task_facts())
    assert msg.startswith(f"{field}: Secret triage-credential holds the credential of AgentTask")
    assert "service account agent" in msg and "runs as intruder" in msg


def test_pod_of_the_task_account_may_mount_it() -> None:
    body = review_body("Pod", pod_obj(volumes=[VOLUME]), username="admin", extra={})
    allowed(admission.VALIDATE_PODS, body, task_facts())


def test_default_service_account_is_assumed() -> None:
    pod = pod_obj(volumes=[VOLUME])
    del pod["spec"]["serviceAccountName"]
    body = review_body("Pod", pod, username="admin", extra={})
    assert "runs as default" in denied(admission.VALIDATE_PODS, body, task_facts())
    allowed(admission.VALIDATE_PODS, body, task_facts(sa="default"))


def test_another_apps_secret_named_like_a_credential_is_not_ours() -> None:
    body = review_body("Pod", pod_obj(sa="x", volumes=[VOLUME]), username="admin", extra={})
    opaque = {"type": "Opaque", "metadata": {"name": "triage-credential"}}
    facts = admission.Facts(tasks={"triage": None}, secrets={"triage-credential": opaque})
    allowed(admission.VALIDATE_PODS, body, facts)


@pytest.mark.parametrize(
    "secret", [None, {"type": "taskwarden.dev/credential", "metadata": {"name": "x"}}]
)
def test_the_credential_of_a_task_that_does_not_exist_is_refused(
    secret: dict[str, Any] | None,
) -> None:
    body = review_body("Pod", pod_obj(volumes=[VOLUME]), username="admin", extra={})
    facts = admission.Facts(tasks={"triage": None}, secrets={"triage-credential": secret})
    msg = denied(admission.VALIDATE_PODS, body, facts)
    assert msg.startswith(
        "spec.volumes[0].secret.secretName: Secret triage-credential is the credential of "
        "AgentTask triage, which does not exist"
    )


def test_unread_facts_refuse_a_credential_reference() -> None:
    body = review_body("Pod", pod_obj(volumes=[VOLUME]), username="admin", extra={})
    msg = str(admission.decide(admission.VALIDATE_PODS, body, task_facts()).message)
    assert msg.startswith("spec.volumes[0].secret.secretName: Secret triage-credential could not")


def test_kubectl_debug_is_reviewed_through_the_ephemeralcontainers_subresource() -> None:
    pod = pod_obj(sa="intruder")
    debug = {
        **pod,
        "spec": {
            **pod["spec"],
            "ephemeralContainers": [
                {
                    "name": "debugger",
                    "env": [
                        {
                            "name": "T",
                            "valueFrom": {
                                "secretKeyRef": {"name": "triage-credential", "key": "token"}
                            },
                        }
                    ],
                }
            ],
        },
    }
    body = review_body("Pod", debug, username="admin", extra={}, operation="UPDATE", old=pod)
    body["request"]["subResource"] = "ephemeralcontainers"
    assert admission.needs(admission.VALIDATE_PODS, body) == admission.Needs(
        NS, tasks=("triage",), secrets=("triage-credential",)
    )
    msg = denied(admission.VALIDATE_PODS, body, task_facts())
    assert msg.startswith(
        "spec.ephemeralContainers[0].env[0].valueFrom.secretKeyRef.name: Secret "
        "triage-credential holds the credential of AgentTask triage"
    )
    body["request"].pop("subResource")  # a plain pod UPDATE cannot add containers
    assert admission.needs(admission.VALIDATE_PODS, body) is None


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize(
    ("body", "start"),
    [
        (None, "request.body"),
        ([], "request.body"),
        ({"kind": "Pod"}, "request.body"),
        ({"request": {}}, "request.uid"),
        ({"request": {"uid": "u"}}, "request.operation"),
        ({"request": {"uid": "u", "operation": "CREATE"}}, "request.kind.kind"),
        (
            {"request": {"uid": "u", "operation": "CREATE", "kind": {"kind": "AgentTask"}}},
            "request.object",
        ),
    ],
)
def test_malformed_reviews_are_refused_cleanly(body: Any, start: str) -> None:
    msg = denied(admission.VALIDATE_TASKS, body)
    assert msg.startswith(start)


def test_wrong_kind_for_the_webhook_is_refused() -> None:
    body = review_body("AgentPolicy", policy_obj())
    assert denied(admission.VALIDATE_TASKS, body).startswith("request.kind:")


def test_unknown_webhook_is_refused() -> None:
    assert denied("nope", review_body("AgentTask", task_obj())).startswith("request.path:")


def test_a_bug_becomes_a_denial_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(policy, "requester_allowed", boom)
    r = response(admission.VALIDATE_TASKS, review_body("AgentTask", stamped_task()), POLICIES)
    assert r["allowed"] is False and r["status"]["code"] == 400
    assert r["status"]["message"].startswith(
        "request.object: the validate-agenttasks webhook could not"
    )
    assert r["uid"] == "req-1"


def test_delete_is_allowed() -> None:
    body = review_body("AgentTask", None, operation="DELETE")
    allowed(admission.VALIDATE_TASKS, body)


# --------------------------------------------------------------------------- configuration, TLS


def settings(**server: Any) -> config.Settings:
    return config.Settings(
        watch=config.WatchSettings(operator_namespace="tw-system"),
        server=config.ServerSettings(**server),
    )


def test_local_webhooks_call_the_url_with_fail_and_ignore_policies() -> None:
    mutating, validating = webhook_config.webhook_configurations(
        settings(webhook_url="https://127.0.0.1:9443"), "PEM"
    )
    assert mutating["metadata"]["name"] == validating["metadata"]["name"] == "taskwarden"
    hooks = {h["name"]: h for h in mutating["webhooks"] + validating["webhooks"]}
    policies = {name: h["failurePolicy"] for name, h in hooks.items()}
    assert policies == {
        "agenttasks.mutate.taskwarden.dev": "Fail",
        "agentapprovals.mutate.taskwarden.dev": "Fail",
        "pods.mutate.taskwarden.dev": "Ignore",
        "agenttasks.validate.taskwarden.dev": "Fail",
        "agentapprovals.validate.taskwarden.dev": "Fail",
        "pods.validate.taskwarden.dev": "Fail",
    }
    never = {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": ["kube-system", "tw-system"],
    }
    for h in hooks.values():
        assert h["timeoutSeconds"] == 5 and h["sideEffects"] == "None"
        assert h["admissionReviewVersions"] == ["v1"]
        assert base64.b64decode(h["clientConfig"]["caBundle"]) == b"PEM"
        assert h["clientConfig"]["url"].startswith("https://127.0.0.1:9443/")
        assert "matchLabels" not in h["namespaceSelector"]
        assert h["namespaceSelector"]["matchExpressions"][-1] == never
    # The guard is on by default; a namespace opts out with taskwarden.dev/guard=disabled.
    guard = hooks["pods.validate.taskwarden.dev"]
    assert guard["namespaceSelector"]["matchExpressions"] == [
        {"key": "taskwarden.dev/guard", "operator": "NotIn", "values": ["disabled"]},
        never,
    ]
    assert [(r["resources"], r["operations"]) for r in guard["rules"]] == [
        (["pods"], ["CREATE"]),
        (["pods/ephemeralcontainers"], ["UPDATE"]),
    ]
    assert hooks["agenttasks.validate.taskwarden.dev"]["clientConfig"]["url"] == (
        "https://127.0.0.1:9443/validate-agenttasks"
    )


def test_in_cluster_webhooks_call_the_service() -> None:
    mutating, _ = webhook_config.webhook_configurations(
        settings(webhook_service="taskwarden"), "PEM"
    )
    assert mutating["webhooks"][2]["clientConfig"]["service"] == {
        "name": "taskwarden",
        "namespace": "tw-system",
        "port": 9443,  # admission's Service port; 443 is the public endpoints' (the issuer)
        "path": "/mutate-pods",
    }


def test_tls_material_names_every_host_and_chains_to_the_ca() -> None:
    hosts = tls.tls_hosts(settings(webhook_service="taskwarden"))
    assert hosts == ["127.0.0.1", "taskwarden", "taskwarden.tw-system", "taskwarden.tw-system.svc"]
    m = pki.generate_tls(hosts, 1_000_000.0)
    assert pki.tls_problem(m, hosts, 1_000_000.0) is None
    cert = x509.load_pem_x509_certificate(m.cert.encode())
    ca = x509.load_pem_x509_certificates(m.ca_bundle.encode())[0]
    cert.verify_directly_issued_by(ca)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert pki.tls_problem(m, [*hosts, "new.example"], 1_000_000.0) == (
        "the certificate does not name new.example"
    )


def test_tls_is_renewed_30_days_before_expiry_keeping_the_old_ca() -> None:
    hosts = ["127.0.0.1"]
    m = pki.generate_tls(hosts, 0.0)
    assert pki.tls_problem(m, hosts, pki.CERT_VALIDITY - 31 * 86400) is None
    assert "expires" in (pki.tls_problem(m, hosts, pki.CERT_VALIDITY - 29 * 86400) or "")
    renewed = pki.generate_tls(hosts, pki.CERT_VALIDITY - 29 * 86400, m.ca_bundle)
    cas = x509.load_pem_x509_certificates(renewed.ca_bundle.encode())
    assert len(cas) == 2 and cas[1] == x509.load_pem_x509_certificates(m.ca_bundle.encode())[0]
    assert pki.tls_problem(pki.TLSMaterial("x", "y", "z"), hosts, 0.0) is not None


class FakeKube:
    """The three Secret calls ensure_tls makes, with a racing replica when asked."""

    def __init__(self, secret: dict[str, Any] | None = None, race: dict[str, Any] | None = None):
        self.secret, self.race, self.writes = secret, race, 0

    async def get_secret(self, ns: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.secret)

    async def create_secret(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.race is not None:  # another replica created it first
            self.secret, self.race = self.race, None
            raise ApiError(409, "AlreadyExists")
        self.writes += 1
        self.secret = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}
        return self.secret

    async def replace_secret(self, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        assert body["metadata"]["resourceVersion"] == self.secret["metadata"]["resourceVersion"]
        self.writes += 1
        self.secret = {**body, "metadata": {**body["metadata"], "resourceVersion": "2"}}
        return self.secret


def secret_of(m: pki.TLSMaterial) -> dict[str, Any]:
    body = tls.secret_body("tw-system", m, None)
    body["metadata"]["resourceVersion"] = "7"
    return body


def test_tls_secret_is_created_once_adopted_and_renewed() -> None:
    import asyncio

    s = settings(webhook_url="https://127.0.0.1:9443")
    kube = FakeKube()
    created = asyncio.run(tls.ensure_tls(kube, s, 1_000_000.0))  # type: ignore[arg-type]
    assert kube.writes == 1 and kube.secret["type"] == "kubernetes.io/tls"
    again = asyncio.run(tls.ensure_tls(kube, s, 1_000_000.0))  # type: ignore[arg-type]
    assert again == created and kube.writes == 1  # every replica serves the same material

    theirs = pki.generate_tls(["127.0.0.1"], 1_000_000.0)
    racing = FakeKube(race=secret_of(theirs))
    assert asyncio.run(tls.ensure_tls(racing, s, 1_000_000.0)) == theirs  # type: ignore[arg-type]
    assert racing.writes == 0

    old = pki.generate_tls(["127.0.0.1"], 0.0)
    expiring = FakeKube(secret_of(old))
    later = pki.CERT_VALIDITY - 10 * 86400
    renewed = asyncio.run(tls.ensure_tls(expiring, s, later))  # type: ignore[arg-type]
    assert renewed != old and expiring.writes == 1
    assert pki.tls_problem(renewed, ["127.0.0.1"], later) is None
    assert len(x509.load_pem_x509_certificates(renewed.ca_bundle.encode())) == 2


# --------------------------------------------------------------------------- layers


def imported_by(module: str) -> set[str]:
    import subprocess
    import sys

    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(out.stdout.split())


def test_reviews_approvals_and_pki_are_pure() -> None:
    loaded = imported_by("taskwarden.admission, taskwarden.approvals, taskwarden.pki")
    assert not loaded & {"kubernetes", "kopf", "aiohttp", "taskwarden.kube", "taskwarden.server"}


def test_the_server_takes_its_dependencies_instead_of_importing_the_runtime() -> None:
    loaded = imported_by("taskwarden.server")
    assert "taskwarden.runtime" not in loaded and "kopf" not in loaded


def test_approval_events_without_a_running_server_are_ignored() -> None:
    import asyncio

    from taskwarden import server

    asyncio.run(server.on_approval_event(None, "ADDED", {"metadata": {"name": "a"}}))
