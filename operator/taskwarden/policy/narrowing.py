"""Delegation narrowing: is a child task a narrowing of its parent, and how deep may it go?

`narrowing_violation` is the ordered chain of named checks (parent link, scopes, audiences,
data class, depth); `delegation_limits` reads a policy's spec.delegation; `clamp_expiry` keeps
a child from outliving its parent. Called by `policy.delegation.decide`, which both admission
and the task controller use. Pure and stdlib only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from taskwarden import names
from taskwarden.policy import globs, rules
from taskwarden.policy import spec as taskspec


def delegation_limits(policy: Mapping[str, Any]) -> tuple[bool, int]:
    """(allowed, maxDepth) from spec.delegation; absent or malformed means (False, 0).

    `maxDepth` defaults to 1 (children only) when delegation is allowed but no depth is given.
    """
    delegation = rules.policy_spec(policy).get("delegation")
    if not isinstance(delegation, Mapping) or delegation.get("allowed") is not True:
        return False, 0
    depth = delegation.get("maxDepth", 1)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
        return False, 0
    return True, depth


def clamp_expiry(child_expires_at: float, parent_expires_at: float) -> float:
    """A delegated task never outlives its parent: the earlier of the two expiry times."""
    if math.isnan(child_expires_at):
        return parent_expires_at
    return min(child_expires_at, parent_expires_at)


def narrowing_violation(
    child: taskspec.TaskRequest,
    parent: taskspec.TaskRequest,
    *,
    parent_depth: int,
    max_depth: int,
    child_expires_at: float,
    parent_expires_at: float,
) -> str | None:
    """None if `child` is a narrowing of `parent`, else one sentence naming the field and rule.

    `parent_depth` is 0 for a task that is not itself delegated; the child's depth is one more
    and must not exceed `max_depth` (delegation.maxDepth of the parent's policy). Expiry never
    makes a violation: the caller clamps it with `clamp_expiry(child_expires_at,
    parent_expires_at)`.
    """
    del child_expires_at, parent_expires_at  # clamped by the caller, never rejected
    found = first_violation(child, parent, parent_depth=parent_depth, max_depth=max_depth)
    return None if found is None else found[1]


def first_violation(
    child: taskspec.TaskRequest,
    parent: taskspec.TaskRequest,
    *,
    parent_depth: int,
    max_depth: int,
) -> tuple[str, str] | None:
    """The first failing narrowing check as (check name, sentence), or None.

    The check names are those of `CHECKS`: "parent-link", "scopes", "audiences",
    "data-class" and "depth" (so `delegation.decide` can tell a too-deep chain from a widening).
    """
    delegation = _Delegation(child, parent, parent_depth, max_depth)
    for name, check in CHECKS:
        message = check(delegation)
        if message is not None:
            return name, message
    return None


@dataclass(frozen=True)
class _Delegation:
    child: taskspec.TaskRequest
    parent: taskspec.TaskRequest
    parent_depth: int
    max_depth: int


def _check_parent_link(d: _Delegation) -> str | None:
    child, parent = d.child, d.parent
    if child.namespace != parent.namespace or child.delegated_from != parent.name:
        return (
            f"spec.delegatedFrom: {child.delegated_from} must name the parent task "
            f"{parent.namespace}/{parent.name} in the child's own namespace {child.namespace}"
        )
    return None


def _check_child_scopes(d: _Delegation) -> str | None:
    for index, scope in enumerate(d.child.scopes):
        for triple in taskspec.scope_triples(scope):
            detail = _uncovered_by_parent(triple, d.parent)
            if detail is not None:
                return (
                    f"spec.scopes[{index}]: {taskspec.show(triple)} is not within the scopes of "
                    f"parent task {d.parent.name} ({detail}); a delegated task may only narrow them"
                )
    return None


def _uncovered_by_parent(triple: taskspec.Triple, parent: taskspec.TaskRequest) -> str | None:
    tool, action, resource = triple
    same_tool = [s for s in parent.scopes if s.tool == tool]
    if not same_tool:
        return f"the parent has no scope for tool {tool}"
    same_action = [s for s in same_tool if action in s.actions]
    if not same_action:
        return f"the parent does not grant action {action} on tool {tool}"
    patterns = [p for s in same_action for p in s.resources]
    if not any(globs.glob_covers(pattern, resource) for pattern in patterns):
        return f"resource {resource} is not covered by the parent's {', '.join(patterns)}"
    return None


def _check_child_audiences(d: _Delegation) -> str | None:
    for audience in d.child.audiences:
        if audience not in d.parent.audiences:
            return (
                f"spec.audiences: audience {audience} is not among the audiences of parent task "
                f"{d.parent.name}; a delegated task may only narrow them"
            )
    return None


def _check_child_data_class(d: _Delegation) -> str | None:
    child, parent = d.child.data_class, d.parent.data_class
    if (
        child not in names.DATA_CLASSES
        or parent not in names.DATA_CLASSES
        or names.DATA_CLASSES.index(child) > names.DATA_CLASSES.index(parent)
    ):
        return (
            f"spec.dataClass: {child} is higher than dataClass {parent} of parent task "
            f"{d.parent.name}; a delegated task may only keep or lower it"
        )
    return None


def _check_depth(d: _Delegation) -> str | None:
    depth = d.parent_depth + 1
    if depth > d.max_depth:
        return (
            f"spec.delegatedFrom: delegation depth {depth} exceeds delegation.maxDepth "
            f"{d.max_depth} of the parent's policy"
        )
    return None


CHECKS: tuple[tuple[str, Callable[[_Delegation], str | None]], ...] = (
    ("parent-link", _check_parent_link),
    ("scopes", _check_child_scopes),
    ("audiences", _check_child_audiences),
    ("data-class", _check_child_data_class),
    ("depth", _check_depth),
)
"""The narrowing checks in order; the first failing one explains the refusal."""
