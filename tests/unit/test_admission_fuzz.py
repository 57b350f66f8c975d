"""Admission reviews survive anything: random and malformed AgentTask, AgentPolicy, AgentApproval
and Pod payloads, userInfo and operations never raise, always yield a valid AdmissionReview
response, and every refusal names a field (spec., metadata. or request.)."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskwarden import admission, approvals, policy

NS = "agents"
FIELD_PREFIXES = ("spec.", "metadata.", "request.")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "*", "**", "repo:acme/*", "agent", "CREATE", "sha256:00", "10s", "-1h"]),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the well-formed value, sometimes junk in its place."""
    return st.one_of(strategy, strategy, strategy, junk)


names = st.sampled_from(["triage", "parent", "child", "agent", "x", "a.b", "Bad_Name", ""])
accounts = st.sampled_from(["agent", "orchestrator", "other", "default"])
tools = st.sampled_from(["github", "slack", "*"])
words = st.sampled_from(["read", "comment", "push", "*", "delete"])
resources = st.sampled_from(["repo:acme/*", "repo:acme/w", "repo:**", "*", "repo:acme/w?"])
audiences = st.sampled_from(["https://api.github.com", "https://slack.com", "aud"])
classes = st.sampled_from([*policy.DATA_CLASSES, "secret"])
durations = st.sampled_from(["10s", "30m", "1h", "2h", "0s", "soon", "1h30m", "90"])

scopes = st.fixed_dictionaries(
    {},
    optional={
        "tool": maybe(tools),
        "actions": maybe(st.lists(words, max_size=3)),
        "resources": maybe(st.lists(resources, max_size=3)),
    },
)
task_specs = st.fixed_dictionaries(
    {},
    optional={
        "agent": maybe(
            st.fixed_dictionaries(
                {"serviceAccountName": maybe(accounts)}, optional={"podName": maybe(names)}
            )
        ),
        "intent": maybe(st.text(max_size=20)),
        "scopes": maybe(st.lists(maybe(scopes), max_size=3)),
        "audiences": maybe(st.lists(audiences, max_size=3)),
        "dataClass": maybe(classes),
        "ttl": maybe(durations),
        "credentialTTL": maybe(durations),
        "delegatedFrom": maybe(names),
        "completed": maybe(st.booleans()),
    },
)
principals = st.sampled_from(
    ["user:alice", "group:sre", "alice", "group:", "user:", "system:serviceaccount:agents:agent"]
)
policy_specs = st.fixed_dictionaries(
    {},
    optional={
        "subjects": maybe(st.fixed_dictionaries({"serviceAccounts": maybe(st.lists(accounts))})),
        "requesters": maybe(st.lists(principals, max_size=3)),
        "approvers": maybe(st.lists(principals, max_size=3)),
        "rules": maybe(
            st.lists(
                maybe(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "tool": maybe(tools),
                            "actions": maybe(st.lists(words, max_size=3)),
                            "resources": maybe(st.lists(resources, max_size=3)),
                            "audiences": maybe(st.lists(audiences, max_size=3)),
                            "maxDataClass": maybe(classes),
                            "approval": maybe(st.sampled_from(["none", "required", "maybe"])),
                        },
                    )
                ),
                max_size=3,
            )
        ),
        "maxTTL": maybe(durations),
        "maxCredentialTTL": maybe(durations),
        "delegation": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "allowed": maybe(st.booleans()),
                    "maxDepth": maybe(st.integers(-1, 20)),
                },
            )
        ),
        "approvalTTL": maybe(durations),
    },
)
approval_specs = st.fixed_dictionaries(
    {},
    optional={
        "taskName": maybe(names),
        "specHash": maybe(st.sampled_from(["sha256:" + "0" * 64, "sha256:", "x"])),
        "decision": maybe(st.sampled_from(["approve", "deny", "maybe"])),
        "reason": maybe(st.text(max_size=10)),
    },
)
annotation_keys = st.sampled_from(
    ["taskwarden.dev/requester", "taskwarden.dev/approver", "taskwarden.dev/task", "other"]
)
annotation_values = st.one_of(
    names,
    st.builds(
        lambda u, g: json.dumps({"username": u, "groups": g}),
        st.sampled_from(["alice", "system:serviceaccount:agents:agent", ""]),
        st.lists(st.sampled_from(["sre", "dev"]), max_size=2),
    ),
    junk,
)
metadata = st.fixed_dictionaries(
    {},
    optional={
        "name": maybe(names),
        "namespace": maybe(st.just(NS)),
        "annotations": maybe(st.dictionaries(annotation_keys, annotation_values, max_size=3)),
        "creationTimestamp": maybe(st.sampled_from(["2030-01-01T00:00:00Z", "yesterday"])),
    },
)
statuses = st.fixed_dictionaries(
    {},
    optional={
        "phase": maybe(st.sampled_from(["Active", "Pending", "Revoked", "Completed"])),
        "specHash": maybe(st.sampled_from(["sha256:" + "0" * 64, "x"])),
        "decision": maybe(st.fixed_dictionaries({"policy": maybe(names)})),
    },
)
containers = st.lists(
    maybe(
        st.fixed_dictionaries(
            {"name": st.sampled_from(["a", "b"])},
            optional={
                "env": maybe(st.lists(junk, max_size=2)),
                "envFrom": maybe(
                    st.lists(
                        st.fixed_dictionaries(
                            {"secretRef": st.fixed_dictionaries({"name": maybe(names)})}
                        ),
                        max_size=2,
                    )
                ),
                "volumeMounts": maybe(st.lists(junk, max_size=2)),
            },
        )
    ),
    max_size=2,
)
pod_specs = st.fixed_dictionaries(
    {},
    optional={
        "serviceAccountName": maybe(accounts),
        "containers": maybe(containers),
        "initContainers": maybe(containers),
        "volumes": maybe(
            st.lists(
                st.one_of(
                    st.fixed_dictionaries(
                        {
                            "name": st.sampled_from(["taskwarden-credential", "v"]),
                            "secret": st.fixed_dictionaries(
                                {
                                    "secretName": st.sampled_from(
                                        ["triage-credential", "-credential"]
                                    )
                                }
                            ),
                        }
                    ),
                    junk,
                ),
                max_size=2,
            )
        ),
    },
)


def objects(kind: str, specs: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return maybe(
        st.fixed_dictionaries(
            {"kind": st.just(kind)},
            optional={"metadata": maybe(metadata), "spec": specs, "status": maybe(statuses)},
        )
    )


any_object = st.one_of(
    objects("AgentTask", task_specs),
    objects("AgentPolicy", policy_specs),
    objects("AgentApproval", approval_specs),
    objects("Pod", pod_specs),
)
user_infos = maybe(
    st.fixed_dictionaries(
        {},
        optional={
            "username": maybe(
                st.sampled_from(["alice", "system:serviceaccount:agents:agent", "", "system:admin"])
            ),
            "groups": maybe(st.lists(st.sampled_from(["sre", "system:masters", ""]), max_size=3)),
            "extra": maybe(
                st.dictionaries(
                    st.sampled_from([admission.POD_NAME_EXTRA, admission.POD_UID_EXTRA, "other"]),
                    maybe(st.lists(st.text(max_size=6), max_size=2)),
                    max_size=3,
                )
            ),
        },
    )
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "uid": maybe(st.just("uid-1")),
        "kind": maybe(
            st.fixed_dictionaries(
                {
                    "kind": maybe(
                        st.sampled_from(["AgentTask", "AgentPolicy", "AgentApproval", "Pod"])
                    )
                }
            )
        ),
        "operation": maybe(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"])),
        "namespace": maybe(st.just(NS)),
        "name": maybe(names),
        "userInfo": user_infos,
        "object": any_object,
        "oldObject": any_object,
    },
)
reviews = maybe(
    st.fixed_dictionaries(
        {"request": maybe(requests)},
        optional={"kind": maybe(st.just("AdmissionReview")), "apiVersion": junk},
    )
)
webhooks = st.one_of(st.sampled_from(admission.WEBHOOKS), st.text(max_size=8))
task_like = objects("AgentTask", task_specs)
facts = st.builds(
    admission.Facts,
    policies=st.lists(objects("AgentPolicy", policy_specs), max_size=3).map(tuple),
    tasks=st.dictionaries(names, st.one_of(st.none(), task_like), max_size=4),
    error=st.sampled_from(["", "could not read AgentPolicies (500); try again"]),
)


def assert_valid_response(out: Any, body: Any) -> None:
    assert isinstance(out, dict)
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    r = out["response"]
    assert isinstance(r["uid"], str) and isinstance(r["allowed"], bool)
    request = body.get("request") if isinstance(body, dict) else None
    if isinstance(request, dict) and isinstance(request.get("uid"), str):
        assert r["uid"] == request["uid"]
    json.dumps(out)  # serialisable as sent
    if r["allowed"]:
        assert "status" not in r
        if "patch" in r:
            assert r["patchType"] == "JSONPatch"
            ops = json.loads(base64.b64decode(r["patch"]))
            assert isinstance(ops, list) and ops
            for op in ops:
                assert op["op"] == "add" and op["path"].startswith("/")
    else:
        status = r["status"]
        assert status["code"] in (400, 403, 404)
        message = status["message"]
        assert isinstance(message, str) and message
        assert any(p in message for p in FIELD_PREFIXES), message
        assert len(message) <= admission.MAX_MESSAGE
        assert "patch" not in r


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(webhook=webhooks, body=reviews, facts=facts)
def test_any_review_gets_a_valid_response(webhook: str, body: Any, facts: admission.Facts) -> None:
    need = admission.needs(webhook, body)
    assert need is None or isinstance(need, admission.Needs)
    assert_valid_response(admission.review(webhook, body, facts), body)


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    webhook=st.sampled_from(admission.WEBHOOKS),
    kind=st.sampled_from(["AgentTask", "AgentApproval", "Pod", "AgentPolicy"]),
    operation=st.sampled_from(["CREATE", "UPDATE", "DELETE"]),
    obj=any_object,
    old=any_object,
    user=user_infos,
    facts=facts,
)
def test_well_framed_reviews_of_random_objects(
    webhook: str, kind: str, operation: str, obj: Any, old: Any, user: Any, facts: admission.Facts
) -> None:
    """The AdmissionReview frame is valid, so the random object itself reaches every check."""
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"kind": kind},
            "operation": operation,
            "namespace": NS,
            "userInfo": user,
            "object": obj,
            "oldObject": old,
        },
    }
    assert_valid_response(admission.review(webhook, body, facts), body)


@settings(max_examples=300, deadline=None)
@given(spec=task_specs, username=st.sampled_from(["system:serviceaccount:agents:agent", "bob"]))
def test_mutation_then_validation_agree_on_the_stamp(spec: Any, username: str) -> None:
    """What the mutating webhook stamps, the validating webhook accepts as the stamp."""
    obj = {"kind": "AgentTask", "metadata": {"name": "t", "namespace": NS}, "spec": spec}
    body = {
        "request": {
            "uid": "u",
            "kind": {"kind": "AgentTask"},
            "operation": "CREATE",
            "namespace": NS,
            "userInfo": {
                "username": username,
                "groups": ["g"],
                "extra": {admission.POD_NAME_EXTRA: ["p"], admission.POD_UID_EXTRA: ["1"]},
            },
            "object": obj,
        }
    }
    mutated = admission.review(admission.MUTATE_TASKS, body)["response"]
    assert mutated["allowed"] is True
    ops = json.loads(base64.b64decode(mutated["patch"]))
    stamped = {**obj, "metadata": {**obj["metadata"], "annotations": ops[0]["value"]}}
    body["request"]["object"] = stamped
    # The server reads the task's credential Secret name; here it is free.
    free = admission.Facts(secrets={"t-credential": None})
    out = admission.review(admission.VALIDATE_TASKS, body, free)["response"]
    if not out["allowed"]:
        # Never because of the stamp: only the spec or the requester rule can refuse it.
        assert "set by admission" not in out["status"]["message"]
        assert "missing" not in out["status"]["message"]
    own_account = (spec.get("agent") or {}) if isinstance(spec.get("agent"), dict) else {}
    valid = True
    try:
        policy.task_request(NS, "t", spec)
    except ValueError:
        valid = False
    if (
        valid
        and not spec.get("delegatedFrom")
        and username == f"system:serviceaccount:{NS}:{own_account.get('serviceAccountName')}"
    ):
        assert out["allowed"] is True, out


@settings(max_examples=300, deadline=None)
@given(
    approval=objects("AgentApproval", approval_specs),
    task=st.one_of(st.none(), task_like),
    policies=st.lists(objects("AgentPolicy", policy_specs), max_size=2),
)
def test_approval_status_never_raises(approval: Any, task: Any, policies: list[Any]) -> None:
    if not isinstance(approval, dict) or (task is not None and not isinstance(task, dict)):
        return  # the watch only delivers objects
    policies = [p for p in policies if isinstance(p, dict)]
    st_ = approvals.status(approval, task, policies, 1893456000.0)
    assert isinstance(st_["valid"], bool) and isinstance(st_["reason"], str)
    # Every status leads with one of the codes approvals.Reason defines (a list typed here
    # drifted when TaskUIDMismatch and AgentApproval were added).
    assert st_["reason"].split(":")[0] in set(approvals.Reason)
