"""The AgentTask reviews: stamp the requester, then bind, validate and narrow the task.

Dispatched by `admission.dispatch` for the mutate-agenttasks and validate-agenttasks webhooks.
- mutate: stamp the authenticated creator into `taskwarden.dev/requester`.
- validate: requester binding (the agent itself or a covering policy's `requesters`), spec
  validity, immutability after creation, and for a delegated task the checks on its parent and
  the delegation decision (`judge_delegation`, over the parent chain the server gathered).
Pure: the API reads arrive as `envelope.Facts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from taskwarden import names, policy
from taskwarden.admission import envelope, stamping

MAX_CHAIN: Final = 17
"""Tasks read when walking a delegation chain: one more than the CRD's largest maxDepth (16)."""
WHO: Final = "user who created the task"


def needs(req: envelope.Request) -> envelope.Needs:
    """validate-agenttasks on CREATE: the namespace's policies, and the parent chain if any."""
    parent = envelope.as_map(req.obj.get("spec")).get("delegatedFrom")
    if isinstance(parent, str) and parent:
        return envelope.Needs(req.namespace, policies=True, tasks=(parent,), follow_delegation=True)
    return envelope.Needs(req.namespace, policies=True)


def delegated_from(task: Mapping[str, Any] | None) -> str | None:
    """The parent named by an AgentTask's spec.delegatedFrom, if any (for the chain walk)."""
    parent = envelope.as_map(envelope.as_map(task).get("spec")).get("delegatedFrom")
    return parent if isinstance(parent, str) and parent else None


def mutate(req: envelope.Request, facts: envelope.Facts) -> envelope.Outcome:
    envelope.expect_kind(req, "AgentTask", envelope.MUTATE_TASKS)
    if req.operation not in ("CREATE", "UPDATE"):
        return envelope.ALLOW
    stamp = stamping.principal(req, with_pod=True) if req.operation == "CREATE" else {}
    return stamping.stamp(req, names.REQUESTER_ANNOTATION, stamp, WHO)


def validate(req: envelope.Request, facts: envelope.Facts) -> envelope.Outcome:
    envelope.expect_kind(req, "AgentTask", envelope.VALIDATE_TASKS)
    if req.operation == "UPDATE":
        stamping.check_stamped(req, names.REQUESTER_ANNOTATION, {}, WHO)
        _check_immutable(envelope.as_map(req.old.get("spec")), req.obj.get("spec"))
        return envelope.ALLOW
    if req.operation != "CREATE":
        return envelope.ALLOW
    stamping.check_stamped(
        req, names.REQUESTER_ANNOTATION, stamping.principal(req, with_pod=True), WHO
    )
    task = _task_request(req.namespace, req.name, req.obj.get("spec"))
    if facts.error:
        raise envelope.Denied(f"request.namespace: {facts.error}")
    if task.delegated_from:
        _check_delegation(req, task, facts)
        return envelope.ALLOW
    ok, message = policy.requester_allowed(task, req.username, req.groups, facts.policies)
    if not ok:
        raise envelope.Denied(message)
    return envelope.ALLOW


def _task_request(namespace: str, name: str, spec: Any) -> policy.TaskRequest:
    if not isinstance(spec, Mapping):
        raise envelope.Denied("request.object.spec is required and must be an object", 400)
    try:
        return policy.task_request(namespace, name, spec)
    except ValueError as err:
        message = str(err)
        if "spec." not in message:
            message = f"spec.*: {message}"
        raise envelope.Denied(message, 400) from None


def _check_immutable(old: Mapping[str, Any], new_spec: Any) -> None:
    new = envelope.as_map(new_spec)
    for key in sorted(set(old) | set(new)):
        if key == "completed":
            continue
        if old.get(key) != new.get(key):
            raise envelope.Denied(
                f"spec.{key}: the spec of an AgentTask is immutable after creation except "
                "spec.completed; create a new AgentTask instead"
            )
    if old.get("completed") is True and new.get("completed") is not True:
        raise envelope.Denied(
            "spec.completed may only change from false to true: a completed task cannot be "
            "reopened; create a new AgentTask"
        )


# --- Delegation ----------------------------------------------------------------------------------


def _check_delegation(
    req: envelope.Request, child: policy.TaskRequest, facts: envelope.Facts
) -> None:
    """The parent exists, is live, is this requester's own task and is decided by a policy;
    then `judge_delegation` decides from that policy and the gathered chain."""
    parent_name = child.delegated_from or ""
    parent = facts.tasks.get(parent_name)
    if parent is None:
        raise envelope.Denied(
            f"spec.delegatedFrom: parent task {parent_name} does not exist in namespace "
            f"{req.namespace}; a task can only be delegated from an existing task"
        )
    phase = envelope.as_map(parent.get("status")).get("phase")
    pspec = envelope.as_map(parent.get("spec"))
    if phase in names.TERMINAL or pspec.get("completed") is True:
        state = phase if phase in names.TERMINAL else "completed"
        raise envelope.Denied(
            f"spec.delegatedFrom: parent task {parent_name} is {state}; "
            "a task can only be delegated from a live task"
        )
    parent_sa = envelope.as_str(envelope.as_map(pspec.get("agent")).get("serviceAccountName"))
    owner = f"system:serviceaccount:{req.namespace}:{parent_sa}"
    if req.username != owner:
        raise envelope.Denied(
            f"metadata.annotations[{names.REQUESTER_ANNOTATION}]: a delegated task must be "
            f"created by its parent's agent service account {owner}, not by {req.username}"
        )
    try:
        parent_req = policy.task_request(req.namespace, parent_name, pspec)
    except ValueError as err:
        raise envelope.Denied(
            f"spec.delegatedFrom: parent task {parent_name} is invalid ({err})"
        ) from None
    pol = _parent_policy(parent, parent_req, facts.policies)
    if pol is None:
        raise envelope.Denied(
            f"spec.delegatedFrom: no AgentPolicy in namespace {req.namespace} allows parent task "
            f"{parent_name}, so nothing can be delegated from it"
        )
    refusal = judge_delegation(child, parent_req, pol, facts.tasks)
    if refusal:
        raise envelope.Denied(refusal)


def judge_delegation(
    child: policy.TaskRequest,
    parent: policy.TaskRequest,
    pol: Mapping[str, Any],
    chain: Mapping[str, Mapping[str, Any] | None],
) -> str | None:
    """The delegation decision: None when `child` may be delegated from `parent`, else the
    refusal sentence. `pol` decided the parent; `chain` holds the tasks the server read while
    walking spec.delegatedFrom upwards from the parent (up to MAX_CHAIN; None: not found).

    The one seam for the shared pure delegation module: whether delegation is allowed, the
    depth of the chain (loops, broken links, chains longer than read) and the narrowing rules."""
    allowed, max_depth = policy.delegation_limits(pol)
    pol_name = envelope.as_str(envelope.as_map(pol.get("metadata")).get("name"))
    if not allowed:
        return (
            f"spec.delegatedFrom: policy {pol_name} of parent task {parent.name} does not allow "
            "delegation (spec.delegation.allowed)"
        )
    depth = _depth(parent.name, chain)
    if isinstance(depth, str):
        return depth
    violation = policy.narrowing_violation(
        child,
        parent,
        parent_depth=depth,
        max_depth=max_depth,
        child_expires_at=0.0,
        parent_expires_at=0.0,
    )
    return violation.rstrip(".") if violation else None


def _parent_policy(
    parent: Mapping[str, Any], parent_req: policy.TaskRequest, policies: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The policy that decided the parent (status.decision.policy), else the one that would."""
    name = envelope.as_map(envelope.as_map(parent.get("status")).get("decision")).get("policy")
    if not name:
        name = policy.evaluate(parent_req, policies).policy
    for pol in policies:
        if envelope.as_map(pol.get("metadata")).get("name") == name and name:
            return pol
    return None


def _depth(parent_name: str, chain: Mapping[str, Mapping[str, Any] | None]) -> int | str:
    """How many delegations lie above the parent (0 for a root task), or why the chain is
    broken (a refusal sentence)."""
    seen = {parent_name}
    depth = 0
    name = delegated_from(chain.get(parent_name))
    while name:
        if name in seen:
            return f"spec.delegatedFrom: the delegation chain above {parent_name} loops"
        if name not in chain:
            return MAX_CHAIN  # longer than we read: deeper than any maxDepth
        ancestor = chain[name]
        if ancestor is None:
            return (
                f"spec.delegatedFrom: task {name}, an ancestor of parent task {parent_name}, no "
                "longer exists; the delegation chain is broken"
            )
        seen.add(name)
        depth += 1
        name = delegated_from(ancestor)
    return depth
