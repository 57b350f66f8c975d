"""The AgentTask reviews: stamp the requester, then bind, validate and narrow the task.

Dispatched by `admission.dispatch` for the mutate-agenttasks and validate-agenttasks webhooks.
- mutate: stamp the authenticated creator into `taskwarden.dev/requester`.
- validate: requester binding (the agent itself or a covering policy's `requesters`), spec
  validity, immutability after creation, and for a delegated task the checks on its parent and
  the delegation decision (`policy.delegation.decide`, over the parent chain the server gathered).
Pure: the API reads arrive as `envelope.Facts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from taskwarden import names, policy
from taskwarden.admission import envelope, stamping
from taskwarden.policy import delegation, pgscopes, rules

WHO: Final = "user who created the task"
CREDENTIAL_SUFFIX: Final = "-credential"


def needs(req: envelope.Request) -> envelope.Needs:
    """validate-agenttasks on CREATE: the namespace's policies, and the parent chain if any."""
    parent = envelope.as_map(req.obj.get("spec")).get("delegatedFrom")
    secrets = (req.name + CREDENTIAL_SUFFIX,) if req.name else ()
    if isinstance(parent, str) and parent:
        return envelope.Needs(
            req.namespace,
            policies=True,
            tasks=(parent,),
            follow_delegation=True,
            secrets=secrets,
        )
    return envelope.Needs(req.namespace, policies=True, secrets=secrets)


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
    _check_credential_name_free(req, facts)
    _check_backends(task, facts.policies)  # credential backends: scopes they cannot express
    if task.delegated_from:
        _check_delegation(req, task, facts)
        return envelope.ALLOW
    ok, message = policy.requester_allowed(task, req.username, req.groups, facts.policies)
    if not ok:
        raise envelope.Denied(message)
    return envelope.ALLOW


def _check_backends(task: policy.TaskRequest, policies: Any) -> None:
    """A scope of a tool whose rules (in a policy covering the task's agent) name a backend
    must be expressible by it (for postgres: table grants); refused naming the field."""
    for pol in policies or ():
        if not rules.applies(task, pol):
            continue
        try:
            parsed = rules.parse_policy(pol)
        except rules.Invalid:
            continue  # evaluation reports an invalid policy
        for i, scope in enumerate(task.scopes):
            backed = rules.backend_of(parsed, scope.tool)
            if backed is None:
                continue
            where = f"backend {backed.backend} of rule {backed.index} of policy {parsed.name}"
            for j, action in enumerate(scope.actions):
                error = pgscopes.action_error(action)
                if error:
                    raise envelope.Denied(f"spec.scopes[{i}].actions[{j}]: {error} ({where})")
            for j, resource in enumerate(scope.resources):
                error = pgscopes.resource_error(resource)
                if error:
                    raise envelope.Denied(f"spec.scopes[{i}].resources[{j}]: {error} ({where})")
            if task.delivery == names.DELIVERY_EXCHANGE:
                raise envelope.Denied(
                    f"spec.delivery: exchange cannot carry the credential of {where} yet; "
                    "use delivery: secret"
                )


def _check_credential_name_free(req: envelope.Request, facts: envelope.Facts) -> None:
    """The task's credential Secret name must be free or already this task's own: the operator
    would otherwise be asked to overwrite, and on completion delete, someone else's Secret."""
    secret_name = req.name + CREDENTIAL_SUFFIX
    if secret_name not in facts.secrets:
        raise envelope.Denied(
            f"metadata.name: Secret {secret_name} could not be checked, and a task's credential "
            "Secret name must not belong to anyone else; try again"
        )
    found = facts.secrets[secret_name]
    if found is None:
        return
    uid = envelope.as_str(envelope.as_map(req.obj.get("metadata")).get("uid"))
    refs = envelope.as_map(found.get("metadata")).get("ownerReferences")
    owner = next(
        (
            envelope.as_str(envelope.as_map(r).get("uid"))
            for r in (refs if isinstance(refs, list) else [])
            if envelope.as_map(r).get("controller") is True
        ),
        "",
    )
    if not (uid and owner == uid and found.get("type") == names.SECRET_TYPE):
        raise envelope.Denied(
            f"metadata.name: Secret {secret_name} already exists in namespace {req.namespace} "
            "and is not this task's credential Secret; a task's credential Secret "
            f"<name>{CREDENTIAL_SUFFIX} must not belong to anyone else (choose another task "
            "name, or delete that Secret)"
        )


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
    """The one delegation decision, `policy.delegation.decide` (the task controller makes the
    same one), over the parent chain the server gathered; the requester must be the parent's
    agent. A parent that is not Active yet is no refusal: the controller waits for it."""
    result = delegation.decide(child, facts.tasks, facts.policies, requester=req.username)
    if result.refused:
        raise envelope.Denied(result.message)
