"""Delegation is decided once (`policy.delegation.decide`) for admission and the controller:
the same chain walk, depth limit (up to the CRD's maxDepth 16) and narrowing checks, each
caller keeping its own words."""

from __future__ import annotations

from typing import Any

import pytest

from taskwarden import names, policy, timeutil
from taskwarden.credentials import claims, keymanager, tokens
from taskwarden.policy import delegation

NS = "agents"
TD = "cluster.local"
GH = "https://api.github.com"
SA = "research-agent"
OWNER = f"system:serviceaccount:{NS}:{SA}"
EXPIRES = "2030-01-01T00:00:00Z"


def task_body(
    name: str,
    parent: str | None = None,
    *,
    phase: str = "Active",
    recorded_policy: str | None = "agents",
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
        "spec": {
            "agent": {"serviceAccountName": SA},
            "scopes": [{"tool": "github", "actions": ["read"], "resources": ["repo:acme/*"]}],
            "audiences": [GH],
            "dataClass": "internal",
            "ttl": "1h",
            **spec,
        },
        "status": {"phase": phase, "expiresAt": EXPIRES},
    }
    if parent:
        body["spec"]["delegatedFrom"] = parent
    if recorded_policy:
        body["status"]["decision"] = {"policy": recorded_policy}
    return body


def policy_body(max_depth: int | None = 16, *, allowed: bool = True) -> dict[str, Any]:
    deleg: dict[str, Any] = {"allowed": allowed}
    if max_depth is not None:
        deleg["maxDepth"] = max_depth
    return {
        "metadata": {"name": "agents", "namespace": NS},
        "spec": {
            "subjects": {"serviceAccounts": [SA]},
            "rules": [
                {
                    "tool": "github",
                    "actions": ["read"],
                    "resources": ["repo:acme/**"],
                    "audiences": [GH],
                    "maxDataClass": "internal",
                }
            ],
            "delegation": deleg,
        },
    }


def chain(depth: int) -> dict[str, dict[str, Any] | None]:
    """Tasks t1 (root) .. t<depth>, each delegated from the one before."""
    return {
        f"t{i}": task_body(f"t{i}", f"t{i - 1}" if i > 1 else None) for i in range(1, depth + 1)
    }


def child(parent: str, **spec: Any) -> policy.TaskRequest:
    return policy.task_request(NS, "child", task_body("child", parent, **spec)["spec"])


def gathered(cluster: dict[str, dict[str, Any] | None], parent: str) -> dict[str, Any]:
    """What a gatherer reads from `cluster` (absent there: a 404) with `next_to_read`."""
    tasks: dict[str, dict[str, Any] | None] = {}
    while (name := delegation.next_to_read(parent, tasks)) is not None:
        tasks[name] = cluster.get(name)
    return tasks


def both(
    kid: policy.TaskRequest, tasks: dict[str, Any], policies: list[dict[str, Any]]
) -> tuple[delegation.Result, delegation.Result]:
    """(admission's decision, the controller's decision) for the same facts."""
    admission = delegation.decide(kid, tasks, policies, requester=OWNER)
    controller = delegation.decide(kid, tasks, policies, trust_domain=TD)
    return admission, controller


# --- depth ------------------------------------------------------------------------------------


def test_max_depth_is_the_crds_and_the_act_chain_fits() -> None:
    assert delegation.MAX_DEPTH == 16 == claims.MAX_ACT_DEPTH
    assert delegation.MAX_CHAIN == delegation.MAX_DEPTH + 1


@pytest.mark.parametrize(
    ("max_depth", "depth", "code"),
    [
        (1, 1, delegation.Code.DELEGATED),
        (1, 2, delegation.Code.DEPTH_EXCEEDED),
        (8, 8, delegation.Code.DELEGATED),
        (8, 9, delegation.Code.DEPTH_EXCEEDED),
        *[(16, depth, delegation.Code.DELEGATED) for depth in range(9, 17)],
        *[(depth, depth, delegation.Code.DELEGATED) for depth in range(9, 17)],
        *[(depth - 1, depth, delegation.Code.DEPTH_EXCEEDED) for depth in range(9, 17)],
        (16, 17, delegation.Code.DEPTH_EXCEEDED),
        (0, 1, delegation.Code.DEPTH_EXCEEDED),
    ],
)
def test_admission_and_the_controller_agree_on_depth(
    max_depth: int, depth: int, code: delegation.Code
) -> None:
    cluster = chain(depth)
    tasks = gathered(cluster, f"t{depth}")
    assert tasks == cluster  # every task of a chain up to 17 long is read
    admission, controller = both(child(f"t{depth}"), tasks, [policy_body(max_depth)])
    assert admission.code == controller.code == code
    assert admission.depth == controller.depth == depth
    assert admission.refused == controller.refused == (code is not delegation.Code.DELEGATED)
    if code is delegation.Code.DEPTH_EXCEEDED:
        assert admission.message == (
            f"spec.delegatedFrom: delegation depth {depth} exceeds delegation.maxDepth "
            f"{max_depth} of the parent's policy"
        )
        assert delegation.task_verdict(controller) == ("Denied", "NotANarrowing", admission.message)
    else:
        assert delegation.task_verdict(controller) is None
        assert controller.act is not None and admission.act is None
        assert tokens.delegation_depth({"act": controller.act}) == depth


def test_max_depth_defaults_to_children_only() -> None:
    kid = child("t2")
    admission, controller = both(kid, chain(2), [policy_body(None)])
    assert admission.code == controller.code == delegation.Code.DEPTH_EXCEEDED
    assert both(child("t1"), chain(1), [policy_body(None)])[1].ok


def test_a_chain_longer_than_is_read_is_too_deep() -> None:
    cluster = chain(30)
    tasks = gathered(cluster, "t30")
    assert len(tasks) == delegation.MAX_CHAIN
    admission, controller = both(child("t30"), tasks, [policy_body(16)])
    assert admission.code == controller.code == delegation.Code.CHAIN_TOO_LONG
    assert "exceeds delegation.maxDepth 16" in admission.message
    assert delegation.task_verdict(controller) == (
        "Denied",
        "DelegationTooDeep",
        "spec.delegatedFrom chain too deep",
    )


def test_the_deepest_act_chain_is_signed_and_verifies() -> None:
    result = delegation.decide(child("t16"), chain(16), [policy_body(16)], trust_domain=TD)
    assert result.ok and result.act is not None
    signer = keymanager.MemoryKeyManager(clock=lambda: 1_700_000_000.0).signer()
    c = tokens.build_claims(
        issuer="https://issuer",
        spiffe_id=f"spiffe://{TD}/ns/{NS}/sa/{SA}",
        audiences=[GH],
        now=1_700_000_000.0,
        ttl=60,
        not_after=None,
        task={"namespace": NS, "name": "child", "uid": "uid-child"},
        scopes=[{"tool": "github", "actions": ["read"], "resources": ["repo:acme/w"]}],
        data_class="internal",
        intent="deep",
        pod=None,
        act=result.act,
    )
    token = signer.sign(c, 1_700_000_000.0)
    assert (
        tokens.delegation_depth(
            tokens.verify(token, {"keys": [signer.public_jwk()]}, now=1_700_000_001.0)
        )
        == 16
    )


# --- the act chain and the parent's expiry ----------------------------------------------------


def test_the_act_chain_is_built_as_the_controller_built_it() -> None:
    tasks = chain(2)
    assert tasks["t2"] is not None
    tasks["t2"]["status"]["identity"] = {"spiffeID": f"spiffe://{TD}/ns/{NS}/sa/recorded"}
    result = delegation.decide(child("t2"), tasks, [policy_body(2)], trust_domain=TD)
    assert result.act == {
        "sub": f"spiffe://{TD}/ns/{NS}/sa/recorded",
        tokens.TASK_CLAIM: {"namespace": NS, "name": "t2", "uid": "uid-t2"},
        "act": {
            "sub": f"spiffe://{TD}/ns/{NS}/sa/{SA}",
            tokens.TASK_CLAIM: {"namespace": NS, "name": "t1", "uid": "uid-t1"},
        },
    }
    assert result.parent_expires_at == timeutil.parse(EXPIRES)
    assert (
        result.message == "delegated from parent task t2 at depth 2 (maxDepth 2 of policy agents)"
    )


# --- every other code, with each caller's words ---------------------------------------------


def _without(name: str) -> dict[str, Any]:
    tasks: dict[str, Any] = dict(chain(2))
    tasks[name] = None
    return tasks


def _with(name: str, **changes: Any) -> dict[str, Any]:
    tasks: dict[str, Any] = dict(chain(2))
    tasks[name] = task_body(name, "t1" if name == "t2" else None, **changes)
    return tasks


def _loop() -> dict[str, Any]:
    return {"t2": task_body("t2", "t1"), "t1": task_body("t1", "t2")}


CASES: list[tuple[str, dict[str, Any], dict[str, Any], str, tuple[str, str, str] | None]] = [
    (
        "parent missing",
        _without("t2"),
        {},
        "spec.delegatedFrom: parent task t2 does not exist in namespace agents; "
        "a task can only be delegated from an existing task",
        ("Revoked", "ParentRevoked", "parent task t2 is gone"),
    ),
    (
        "parent revoked",
        _with("t2", phase="Revoked"),
        {},
        "spec.delegatedFrom: parent task t2 is Revoked; a task can only be delegated from a "
        "live task",
        ("Revoked", "ParentRevoked", "parent task t2 is Revoked"),
    ),
    (
        "parent completed",
        _with("t2", completed=True),
        {},
        "spec.delegatedFrom: parent task t2 is completed; a task can only be delegated from a "
        "live task",
        ("Revoked", "ParentRevoked", "parent task t2 is completed"),
    ),
    (
        "parent invalid",
        _with("t2", audiences=[]),
        {},
        "spec.delegatedFrom: parent task t2 is invalid (spec.audiences must list at least one "
        "audience)",
        ("Pending", "ParentNotActive", "parent task t2 is not Active yet"),
    ),
    (
        "no parent policy",
        _with("t2", recorded_policy="gone"),
        {},
        "spec.delegatedFrom: no AgentPolicy in namespace agents allows parent task t2, so "
        "nothing can be delegated from it",
        (
            "Denied",
            "DelegationNotAllowed",
            "policy gone of the parent task does not allow delegation (spec.delegation.allowed)",
        ),
    ),
    (
        "delegation not allowed",
        chain(2),
        {"allowed": False},
        "spec.delegatedFrom: policy agents of parent task t2 does not allow delegation "
        "(spec.delegation.allowed)",
        (
            "Denied",
            "DelegationNotAllowed",
            "policy agents of the parent task does not allow delegation (spec.delegation.allowed)",
        ),
    ),
    (
        "ancestor missing",
        _without("t1"),
        {},
        "spec.delegatedFrom: task t1, an ancestor of parent task t2, no longer exists; the "
        "delegation chain is broken",
        ("Revoked", "ParentRevoked", "parent task t1 is gone"),
    ),
    (
        "chain loops",
        _loop(),
        {},
        "spec.delegatedFrom: the delegation chain above t2 loops",
        ("Denied", "DelegationTooDeep", "spec.delegatedFrom chain too deep"),
    ),
    (
        "parent pending",
        _with("t2", phase="Pending"),
        {},
        "spec.delegatedFrom: parent task t2 is not Active yet",
        ("Pending", "ParentNotActive", "parent task t2 is not Active yet"),
    ),
]


@pytest.mark.parametrize(
    ("tasks", "policy_changes", "admission_message", "controller_verdict"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_code_keeps_each_callers_words(
    tasks: dict[str, Any],
    policy_changes: dict[str, Any],
    admission_message: str,
    controller_verdict: tuple[str, str, str],
) -> None:
    pol = policy_body(16, **policy_changes)
    admission, controller = both(child("t2"), tasks, [pol])
    assert admission.code == controller.code
    assert admission.message == admission_message
    assert delegation.task_verdict(controller) == controller_verdict
    assert admission.refused == (admission.code is not delegation.Code.PARENT_NOT_ACTIVE)
    assert not admission.ok


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
def test_a_widening_child_is_not_a_narrowing(spec: dict[str, Any], field: str) -> None:
    admission, controller = both(child("t2", **spec), chain(2), [policy_body(16)])
    assert admission.code == controller.code == delegation.Code.NOT_A_NARROWING
    assert admission.message.startswith(f"{field}:") and "parent task t2" in admission.message
    assert delegation.task_verdict(controller) == ("Denied", "NotANarrowing", admission.message)


def test_the_requester_must_be_the_parents_agent_in_admission_only() -> None:
    kid = child("t1")
    result = delegation.decide(kid, chain(1), [policy_body()], requester="alice")
    assert result.code is delegation.Code.REQUESTER_NOT_PARENT_AGENT
    assert result.message == (
        f"metadata.annotations[{names.REQUESTER_ANNOTATION}]: a delegated task must be created "
        f"by its parent's agent service account {OWNER}, not by alice"
    )
    assert delegation.decide(kid, chain(1), [policy_body()]).ok  # the controller passes none


def test_a_parent_without_a_recorded_decision_uses_the_policy_that_would_decide() -> None:
    tasks = {"t1": task_body("t1", recorded_policy=None)}
    admission, controller = both(child("t1"), tasks, [policy_body()])
    assert admission.ok and controller.ok and admission.policy == "agents"


# --- gathering --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tasks", "parent", "expected"),
    [
        ({}, "t2", "t2"),
        ({"t2": None}, "t2", None),
        ({"t2": task_body("t2", "t1")}, "t2", "t1"),
        ({"t2": task_body("t2", "t1"), "t1": task_body("t1")}, "t2", None),
        ({"t2": task_body("t2", "t1"), "t1": task_body("t1", "t2")}, "t2", None),
        ({}, None, None),
    ],
)
def test_next_to_read_walks_until_the_chain_is_known(
    tasks: dict[str, Any], parent: str | None, expected: str | None
) -> None:
    assert delegation.next_to_read(parent, tasks) == expected
