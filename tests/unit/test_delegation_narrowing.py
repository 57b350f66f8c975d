"""A delegated task must narrow its parent on every axis (scope, action, resource, audience,
data class, depth); expiry is clamped to the parent's, never a reason to refuse."""

from __future__ import annotations

from typing import Any

import pytest

from taskwarden import policy

NS = "agents"
GH = "https://api.github.com"
SLACK = "https://slack.com"


def task(name: str, *, delegated_from: str | None = None, **overrides: Any) -> policy.TaskRequest:
    spec: dict[str, Any] = {
        "agent": {"serviceAccountName": "research-agent"},
        "scopes": [
            {"tool": "github", "actions": ["read", "comment"], "resources": ["repo:acme/*"]},
            {"tool": "slack", "actions": ["post"], "resources": ["channel:triage"]},
        ],
        "audiences": [GH, SLACK],
        "dataClass": "confidential",
        "ttl": "1h",
    }
    if delegated_from is not None:
        spec["delegatedFrom"] = delegated_from
    spec.update(overrides)
    return policy.task_request(NS, name, spec)


PARENT = task("parent")


def child(**overrides: Any) -> policy.TaskRequest:
    return task("child", delegated_from="parent", **overrides)


def violation(
    c: policy.TaskRequest,
    *,
    parent: policy.TaskRequest = PARENT,
    parent_depth: int = 0,
    max_depth: int = 2,
) -> str | None:
    return policy.narrowing_violation(
        c,
        parent,
        parent_depth=parent_depth,
        max_depth=max_depth,
        child_expires_at=2000.0,
        parent_expires_at=1000.0,
    )


def one_scope(tool: str, actions: list[str], resources: list[str]) -> list[dict[str, Any]]:
    return [{"tool": tool, "actions": actions, "resources": resources}]


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # identical to the parent: a narrowing, trivially
        {"scopes": one_scope("github", ["read"], ["repo:acme/widgets"])},
        {"scopes": one_scope("github", ["read", "comment"], ["repo:acme/*"])},  # equal pattern
        {"scopes": one_scope("github", ["comment"], ["repo:acme/w*", "repo:acme/gadget?"])},
        {"scopes": one_scope("slack", ["post"], ["channel:triage"])},
        {"audiences": [SLACK]},
        {"dataClass": "internal"},
        {"dataClass": "public"},
        {"ttl": "5h"},  # longer than the parent's: clamped by the caller, not refused
    ],
)
def test_a_narrowing_is_accepted(overrides: dict[str, Any]) -> None:
    assert violation(child(**overrides)) is None


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        pytest.param(
            {"scopes": one_scope("jira", ["read"], ["project:x"])},
            "spec.scopes[0]",
            "the parent has no scope for tool jira",
            id="tool",
        ),
        pytest.param(
            {"scopes": one_scope("github", ["read", "delete"], ["repo:acme/widgets"])},
            "spec.scopes[0]",
            "github:delete:repo:acme/widgets",
            id="action",
        ),
        pytest.param(
            {"scopes": one_scope("slack", ["read"], ["channel:triage"])},
            "spec.scopes[0]",
            "does not grant action read on tool slack",
            id="action-of-other-tool",
        ),
        pytest.param(
            {"scopes": one_scope("github", ["read"], ["repo:other/widgets"])},
            "spec.scopes[0]",
            "resource repo:other/widgets is not covered by the parent's repo:acme/*",
            id="resource",
        ),
        pytest.param(
            {"scopes": one_scope("github", ["read"], ["repo:acme/widgets/issues"])},
            "spec.scopes[0]",
            "repo:acme/widgets/issues",
            id="resource-deeper",
        ),
        pytest.param(
            {"scopes": one_scope("github", ["read"], ["repo:acme/**"])},
            "spec.scopes[0]",
            "repo:acme/**",
            id="resource-broader-pattern",
        ),
        pytest.param(
            {
                "scopes": [
                    {"tool": "slack", "actions": ["post"], "resources": ["channel:triage"]},
                    {"tool": "github", "actions": ["read"], "resources": ["repo:*"]},
                ]
            },
            "spec.scopes[1]",
            "github:read:repo:*",
            id="second-scope",
        ),
        pytest.param(
            {"audiences": [GH, "https://evil.example"]},
            "spec.audiences",
            "audience https://evil.example is not among the audiences of parent task parent",
            id="audience",
        ),
        pytest.param(
            {"dataClass": "restricted"},
            "spec.dataClass",
            "restricted is higher than dataClass confidential of parent task parent",
            id="data-class",
        ),
    ],
)
def test_widening_any_axis_is_a_violation(
    overrides: dict[str, Any], field: str, fragment: str
) -> None:
    message = violation(child(**overrides))
    assert message is not None
    assert message.startswith(f"{field}: ")
    assert fragment in message
    assert not message.endswith(".")  # messages follow the decision style: no full stop


def test_a_triple_must_be_covered_by_one_parent_scope_not_pieced_together() -> None:
    parent = task(
        "parent",
        scopes=[
            {"tool": "github", "actions": ["read"], "resources": ["repo:acme/a"]},
            {"tool": "github", "actions": ["write"], "resources": ["repo:acme/b"]},
        ],
    )
    crossed = child(scopes=one_scope("github", ["write"], ["repo:acme/a"]))
    assert "spec.scopes[0]" in (violation(crossed, parent=parent) or "")
    straight = child(scopes=one_scope("github", ["write"], ["repo:acme/b"]))
    assert violation(straight, parent=parent) is None


@pytest.mark.parametrize(
    ("parent_depth", "max_depth", "ok"),
    [(0, 1, True), (0, 2, True), (1, 2, True), (2, 2, False), (0, 0, False), (5, 3, False)],
)
def test_depth_is_bounded_by_the_parents_policy(
    parent_depth: int, max_depth: int, ok: bool
) -> None:
    message = violation(child(), parent_depth=parent_depth, max_depth=max_depth)
    if ok:
        assert message is None
    else:
        assert message == (
            f"spec.delegatedFrom: delegation depth {parent_depth + 1} exceeds "
            f"delegation.maxDepth {max_depth} of the parent's policy"
        )


def test_the_child_must_name_this_parent_in_its_own_namespace() -> None:
    assert "spec.delegatedFrom" in (violation(task("child", delegated_from="someone-else")) or "")
    assert "spec.delegatedFrom" in (violation(task("child")) or "")
    elsewhere = policy.task_request(
        "other-ns", "child", {**_spec_of(PARENT), "delegatedFrom": "parent"}
    )
    assert "spec.delegatedFrom" in (violation(elsewhere) or "")


def _spec_of(t: policy.TaskRequest) -> dict[str, Any]:
    return {
        "agent": {"serviceAccountName": t.service_account},
        "scopes": [
            {"tool": s.tool, "actions": list(s.actions), "resources": list(s.resources)}
            for s in t.scopes
        ],
        "audiences": list(t.audiences),
        "dataClass": t.data_class,
    }


def test_scope_violations_are_reported_before_audience_data_class_and_depth() -> None:
    wide = child(
        scopes=one_scope("jira", ["read"], ["x"]), audiences=["https://x"], dataClass="restricted"
    )
    assert (violation(wide, max_depth=0) or "").startswith("spec.scopes[0]")
    assert (violation(child(audiences=["https://x"], dataClass="restricted")) or "").startswith(
        "spec.audiences"
    )


@pytest.mark.parametrize(
    ("child_expires_at", "parent_expires_at", "expected"),
    [(2000.0, 1000.0, 1000.0), (500.0, 1000.0, 500.0), (1000.0, 1000.0, 1000.0)],
)
def test_expiry_is_clamped_to_the_parent(
    child_expires_at: float, parent_expires_at: float, expected: float
) -> None:
    assert policy.clamp_expiry(child_expires_at, parent_expires_at) == expected


def test_a_nan_expiry_falls_back_to_the_parent() -> None:
    assert policy.clamp_expiry(float("nan"), 1000.0) == 1000.0


@pytest.mark.parametrize(
    ("delegation", "expected"),
    [
        (None, (False, 0)),
        ({"allowed": False, "maxDepth": 3}, (False, 0)),
        ({"allowed": True}, (True, 1)),
        ({"allowed": True, "maxDepth": 2}, (True, 2)),
        ({"allowed": True, "maxDepth": 0}, (True, 0)),
        ({"allowed": "true", "maxDepth": 2}, (False, 0)),
        ({"allowed": True, "maxDepth": -1}, (False, 0)),
        ({"allowed": True, "maxDepth": "2"}, (False, 0)),
        ({"allowed": True, "maxDepth": True}, (False, 0)),
        ("yes", (False, 0)),
    ],
)
def test_delegation_limits_default_to_no_delegation(
    delegation: Any, expected: tuple[bool, int]
) -> None:
    spec: dict[str, Any] = {} if delegation is None else {"delegation": delegation}
    assert policy.delegation_limits({"spec": spec}) == expected
