"""The AgentApproval reviews: stamp the approver, then check who may approve which spec.

Dispatched by `admission.dispatch` for the mutate-agentapprovals and validate-agentapprovals
webhooks.
- mutate: stamp the authenticated approver into `taskwarden.dev/approver`.
- validate: the task exists and is live, separation of duties (neither the requester nor the
  agent), the approver is listed in the policy that covers the task, and the specHash binds
  to the task's current spec. An approval is immutable.
Which policy covers a task and which spec hash binds are decided in `taskwarden.approvals`,
shared with the task controller and the approval status controller. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from taskwarden import approvals, names, policy
from taskwarden.admission import envelope, stamping

WHO: Final = "approver"


def needs(req: envelope.Request) -> envelope.Needs | None:
    """validate-agentapprovals on CREATE: the namespace's policies and the task named."""
    task = envelope.as_map(req.obj.get("spec")).get("taskName")
    if isinstance(task, str) and task:
        return envelope.Needs(req.namespace, policies=True, tasks=(task,))
    return None


def mutate(req: envelope.Request, facts: envelope.Facts) -> envelope.Outcome:
    envelope.expect_kind(req, "AgentApproval", envelope.MUTATE_APPROVALS)
    if req.operation not in ("CREATE", "UPDATE"):
        return envelope.ALLOW
    stamp = stamping.principal(req, with_pod=False) if req.operation == "CREATE" else {}
    return stamping.stamp(req, names.APPROVER_ANNOTATION, stamp, WHO)


def validate(req: envelope.Request, facts: envelope.Facts) -> envelope.Outcome:
    envelope.expect_kind(req, "AgentApproval", envelope.VALIDATE_APPROVALS)
    if req.operation == "UPDATE":
        stamping.check_stamped(req, names.APPROVER_ANNOTATION, {}, WHO)
        old, new = envelope.as_map(req.old.get("spec")), envelope.as_map(req.obj.get("spec"))
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key) != new.get(key):
                raise envelope.Denied(
                    f"spec.{key}: an AgentApproval is immutable, bound to one task spec; create a "
                    "new AgentApproval instead"
                )
        return envelope.ALLOW
    if req.operation != "CREATE":
        return envelope.ALLOW
    stamping.check_stamped(
        req, names.APPROVER_ANNOTATION, stamping.principal(req, with_pod=False), WHO
    )
    spec = req.obj.get("spec")
    if not isinstance(spec, Mapping):
        raise envelope.Denied("request.object.spec is required and must be an object", 400)
    task_name = spec.get("taskName")
    if not isinstance(task_name, str) or not task_name:
        raise envelope.Denied("spec.taskName must name an AgentTask in the same namespace", 400)
    if spec.get("decision") not in ("approve", "deny"):
        raise envelope.Denied("spec.decision must be approve or deny", 400)
    if not isinstance(spec.get("specHash"), str):
        raise envelope.Denied("spec.specHash must be the task's status.specHash (sha256:...)", 400)
    if facts.error:
        raise envelope.Denied(f"request.namespace: {facts.error}")
    task = facts.tasks.get(task_name)
    if task is None:
        raise envelope.Denied(
            f"spec.taskName: AgentTask {task_name} does not exist in namespace {req.namespace}"
        )
    for check in (_check_task_live, _check_separation, _check_approver, _check_spec_hash):
        check(req, spec, task, facts)
    return envelope.ALLOW


def _check_task_live(
    req: envelope.Request, spec: Mapping[str, Any], task: Mapping[str, Any], facts: envelope.Facts
) -> None:
    phase = envelope.as_map(task.get("status")).get("phase")
    if phase in names.TERMINAL:
        raise envelope.Denied(
            f"spec.taskName: task {spec['taskName']} is {phase}; a finished task cannot be "
            "approved or denied"
        )


def _check_separation(
    req: envelope.Request, spec: Mapping[str, Any], task: Mapping[str, Any], facts: envelope.Facts
) -> None:
    requester = approvals.requester_username(
        envelope.annotations_of(task, "spec.taskName").get(names.REQUESTER_ANNOTATION)
    )
    if requester and req.username == requester:
        raise envelope.Denied(
            f"request.userInfo.username: {req.username} requested task {spec['taskName']} and "
            "cannot approve it (separation of duties)"
        )
    sa = envelope.as_str(
        envelope.as_map(envelope.as_map(task.get("spec")).get("agent")).get("serviceAccountName")
    )
    if req.username == f"system:serviceaccount:{req.namespace}:{sa}":
        raise envelope.Denied(
            f"request.userInfo.username: {req.username} is the agent of task "
            f"{spec['taskName']} and cannot approve its own access (separation of duties)"
        )


def _check_approver(
    req: envelope.Request, spec: Mapping[str, Any], task: Mapping[str, Any], facts: envelope.Facts
) -> None:
    name = spec["taskName"]
    pol = approvals.task_policy(req.namespace, task, facts.policies)
    if pol is None:
        raise envelope.Denied(
            f"spec.taskName: no AgentPolicy in namespace {req.namespace} allows task {name}, so "
            "there is nothing to approve"
        )
    if not policy.approver_allowed(pol, req.username, req.groups):
        pol_name = envelope.as_map(pol.get("metadata")).get("name")
        raise envelope.Denied(
            f"request.userInfo.username: {req.username} is not listed in spec.approvers of "
            f"policy {pol_name}, which covers task {name}"
        )


def _check_spec_hash(
    req: envelope.Request, spec: Mapping[str, Any], task: Mapping[str, Any], facts: envelope.Facts
) -> None:
    expected = approvals.current_spec_hash(task)
    if spec.get("specHash") != expected:
        raise envelope.Denied(
            f"spec.specHash: {spec.get('specHash')} does not match status.specHash {expected} of "
            f"task {spec['taskName']}; an approval binds to one exact task spec"
        )
