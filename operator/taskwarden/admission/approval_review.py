"""The AgentApproval reviews: stamp the approver, then check who may approve which spec.

Dispatched by `admission.dispatch` for the mutate-agentapprovals and validate-agentapprovals
webhooks.
- mutate: stamp the authenticated approver into `taskwarden.dev/approver`, and the UID of the
  task named into spec.taskUID (when the client did not set it).
- validate: the task exists and is live, spec.taskUID is its UID (a task re-created under the
  same name inherits no approval), separation of duties on the stamped identity (neither the
  requester nor the agent's ServiceAccount), the approver is listed in the policy that covers
  the task (a ServiceAccount only by its own name), and the specHash binds to the task's
  current spec. An approval is immutable.
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


def task_needs(req: envelope.Request) -> envelope.Needs | None:
    """mutate-agentapprovals on CREATE: the task named, whose UID is stamped."""
    task = envelope.as_map(req.obj.get("spec")).get("taskName")
    if isinstance(task, str) and task:
        return envelope.Needs(req.namespace, tasks=(task,))
    return None


def mutate(req: envelope.Request, facts: envelope.Facts) -> envelope.Outcome:
    envelope.expect_kind(req, "AgentApproval", envelope.MUTATE_APPROVALS)
    if req.operation not in ("CREATE", "UPDATE"):
        return envelope.ALLOW
    stamp = stamping.principal(req, with_pod=False) if req.operation == "CREATE" else {}
    outcome = stamping.stamp(req, names.APPROVER_ANNOTATION, stamp, WHO)
    spec = req.obj.get("spec")
    if req.operation != "CREATE" or not isinstance(spec, Mapping) or "taskUID" in spec:
        return outcome
    task = facts.tasks.get(envelope.as_str(spec.get("taskName")))
    uid = envelope.as_str(envelope.as_map(envelope.as_map(task).get("metadata")).get("uid"))
    if not uid:
        return outcome  # validation refuses it, naming spec.taskName or spec.taskUID
    op = {"op": "add", "path": "/spec/taskUID", "value": uid}
    return envelope.Outcome(True, patch=(*outcome.patch, op))


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
    for check in (
        _check_task_live,
        _check_task_uid,
        _check_separation,
        _check_approver,
        _check_spec_hash,
    ):
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


def _check_task_uid(
    req: envelope.Request, spec: Mapping[str, Any], task: Mapping[str, Any], facts: envelope.Facts
) -> None:
    uid = envelope.as_str(envelope.as_map(task.get("metadata")).get("uid"))
    if not uid or spec.get("taskUID") != uid:
        raise envelope.Denied(
            f"spec.taskUID: {spec.get('taskUID')!r} is not the UID {uid} of task "
            f"{spec['taskName']}; an approval binds to one task, not to its name (admission "
            "stamps it when left out)"
        )


def _check_separation(
    req: envelope.Request, spec: Mapping[str, Any], task: Mapping[str, Any], facts: envelope.Facts
) -> None:
    """On the stamped identities (check_stamped made the approver stamp equal req's user)."""
    requester = approvals.task_requester(task)
    conflict = approvals.separation(
        req.username, requester=requester, agent=approvals.task_agent(req.namespace, task)
    )
    if conflict is approvals.Reason.SELF_APPROVAL:
        raise envelope.Denied(
            f"request.userInfo.username: {req.username} requested task {spec['taskName']} and "
            "cannot approve it (separation of duties)"
        )
    if conflict is approvals.Reason.AGENT_APPROVAL:
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
        if policy.is_service_account(req.username, req.groups):
            raise envelope.Denied(
                f"request.userInfo.username: {req.username} is a ServiceAccount and is not listed "
                f"in spec.approvers of policy {pol_name} by its own name (user:{req.username}); "
                "a ServiceAccount may approve only when named explicitly, never through a group; "
                f"policy {pol_name} covers task {name}"
            )
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
