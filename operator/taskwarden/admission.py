"""Admission review functions: an AdmissionReview request in, an AdmissionReview response out.

Called by webhooks.py, which first asks `needs` what to read from the API (policies of the
namespace, tasks by name, the delegation chain), reads it into `Facts`, then calls `review`.
Everything here is pure and never raises: a malformed or hostile request, or a bug, becomes a
clean denial whose message names the field (`spec.`, `metadata.` or `request.`) and the rule.

Webhooks (each one a short chain of named checks; the first failing check explains the denial):
- AgentTask mutate: stamp the authenticated creator into `taskwarden.dev/requester`.
- AgentTask validate: requester binding, spec validity, immutability, delegation narrowing.
- AgentApproval mutate: stamp the authenticated approver into `taskwarden.dev/approver`.
- AgentApproval validate: task exists, separation of duties, listed approver, specHash binding.
- Pod mutate: mount the credential Secret of the task named by `taskwarden.dev/task`.
- Pod validate: only a pod running as a task's service account may mount its credential.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskwarden import approvals, policy, timeutil

REQUESTER_ANNOTATION = "taskwarden.dev/requester"
APPROVER_ANNOTATION = approvals.APPROVER_ANNOTATION
TASK_ANNOTATION = "taskwarden.dev/task"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
CREDENTIAL_SUFFIX = "-credential"
CREDENTIAL_VOLUME = "taskwarden-credential"
CREDENTIAL_MOUNT_PATH = "/var/run/secrets/taskwarden.dev/"
TOKEN_FILE_ENV = "TASKWARDEN_TOKEN_FILE"
TOKEN_FILE = CREDENTIAL_MOUNT_PATH + "token"
TERMINAL = ("Completed", "Expired", "Revoked", "Denied", "Failed")
MAX_CHAIN = 17
"""Tasks read when walking a delegation chain: one more than the CRD's largest maxDepth (16)."""
MAX_MESSAGE = 1500

MUTATE_TASKS = "mutate-agenttasks"
VALIDATE_TASKS = "validate-agenttasks"
MUTATE_APPROVALS = "mutate-agentapprovals"
VALIDATE_APPROVALS = "validate-agentapprovals"
MUTATE_PODS = "mutate-pods"
VALIDATE_PODS = "validate-pods"
WEBHOOKS = (
    MUTATE_TASKS,
    VALIDATE_TASKS,
    MUTATE_APPROVALS,
    VALIDATE_APPROVALS,
    MUTATE_PODS,
    VALIDATE_PODS,
)
"""Webhook names; each is served at `/<name>` and used as the metrics label."""

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


# --- Inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Needs:
    """What a review must read from the API before it can decide."""

    namespace: str
    policies: bool = False
    tasks: tuple[str, ...] = ()
    follow_delegation: bool = False
    """Also read each task's spec.delegatedFrom parent, up to MAX_CHAIN tasks."""


@dataclass(frozen=True)
class Facts:
    """What was read: AgentPolicies of the namespace, AgentTasks by name (None: not found; a
    name absent from `tasks` was not read). `error` says why reading failed: the review denies."""

    policies: tuple[Mapping[str, Any], ...] = ()
    tasks: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class Request:
    """The parts of an AdmissionReview request the checks read, type-checked."""

    uid: str
    operation: str
    kind: str
    namespace: str
    name: str
    obj: Mapping[str, Any]
    old: Mapping[str, Any]
    username: str
    groups: tuple[str, ...]
    extra: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Outcome:
    allowed: bool
    message: str = ""
    code: int = 200
    patch: tuple[dict[str, Any], ...] = ()


class Denied(Exception):
    """Raised inside a check to refuse the request; the message names field and rule."""

    def __init__(self, message: str, code: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


ALLOW = Outcome(True)


# --- Entry points --------------------------------------------------------------------------------


def review(webhook: str, body: Any, facts: Facts | None = None) -> dict[str, Any]:
    """The AdmissionReview response for `body`; never raises."""
    return envelope(request_uid(body), decide(webhook, body, facts or Facts()))


def decide(webhook: str, body: Any, facts: Facts) -> Outcome:
    """The verdict for one AdmissionReview; never raises."""
    try:
        check = _REVIEWS.get(webhook)
        if check is None:
            raise Denied(f"request.path: no admission webhook is served at /{webhook}", 404)
        return check(parse(body), facts)
    except Denied as d:
        return Outcome(False, _clip(d.message), d.code)
    except Exception as e:  # a bug must refuse cleanly, never crash or return HTTP 500
        return Outcome(
            False,
            f"request.object: the {webhook} webhook could not review this object "
            f"({type(e).__name__}); it was refused to stay safe",
            400,
        )


def envelope(uid: str, outcome: Outcome) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": outcome.allowed}
    if not outcome.allowed:
        response["status"] = {
            "status": "Failure",
            "code": outcome.code,
            "reason": {400: "BadRequest", 404: "NotFound"}.get(outcome.code, "Forbidden"),
            "message": outcome.message,
        }
    elif outcome.patch:
        raw = json.dumps(list(outcome.patch), separators=(",", ":")).encode()
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(raw).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def needs(webhook: str, body: Any) -> Needs | None:
    """What `webhook` must read before deciding on `body`; None when nothing. Never raises."""
    try:
        req = parse(body)
    except Exception:
        return None
    if req.operation != "CREATE":
        return None
    spec = _map(req.obj.get("spec"))
    if webhook == VALIDATE_TASKS and req.kind == "AgentTask":
        parent = spec.get("delegatedFrom")
        if isinstance(parent, str) and parent:
            return Needs(req.namespace, policies=True, tasks=(parent,), follow_delegation=True)
        return Needs(req.namespace, policies=True)
    if webhook == VALIDATE_APPROVALS and req.kind == "AgentApproval":
        task = spec.get("taskName")
        if isinstance(task, str) and task:
            return Needs(req.namespace, policies=True, tasks=(task,))
        return None
    if webhook == VALIDATE_PODS and req.kind == "Pod":
        names = tuple(dict.fromkeys(task for _, _, task in credential_refs(req.obj)))
        return Needs(req.namespace, tasks=names) if names else None
    return None


def delegated_from(task: Mapping[str, Any] | None) -> str | None:
    """The parent named by an AgentTask's spec.delegatedFrom, if any (for the chain walk)."""
    parent = _map(_map(task).get("spec")).get("delegatedFrom")
    return parent if isinstance(parent, str) and parent else None


# --- Parsing -------------------------------------------------------------------------------------


def request_uid(body: Any) -> str:
    request = body.get("request") if isinstance(body, Mapping) else None
    uid = request.get("uid") if isinstance(request, Mapping) else None
    return uid if isinstance(uid, str) else ""


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse(body: Any) -> Request:
    if not isinstance(body, Mapping):
        raise Denied("request.body must be an AdmissionReview object", 400)
    if body.get("kind", "AdmissionReview") != "AdmissionReview":
        raise Denied("request.body must be an AdmissionReview (kind AdmissionReview)", 400)
    request = body.get("request")
    if not isinstance(request, Mapping):
        raise Denied("request.body: the AdmissionReview carries no request to review", 400)
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise Denied("request.uid is required", 400)
    operation = request.get("operation")
    if operation not in ("CREATE", "UPDATE", "DELETE", "CONNECT"):
        raise Denied("request.operation must be CREATE, UPDATE, DELETE or CONNECT", 400)
    kind = _map(request.get("kind")).get("kind")
    if not isinstance(kind, str) or not kind:
        raise Denied("request.kind.kind is required", 400)
    obj, old = request.get("object"), request.get("oldObject")
    if operation in ("CREATE", "UPDATE") and not isinstance(obj, Mapping):
        raise Denied(f"request.object is required for {operation}", 400)
    if operation == "UPDATE" and not isinstance(old, Mapping):
        raise Denied("request.oldObject is required for UPDATE", 400)
    user = _map(request.get("userInfo"))
    groups = user.get("groups")
    extra = {
        str(key): tuple(v for v in values if isinstance(v, str))
        for key, values in _map(user.get("extra")).items()
        if isinstance(values, list)
    }
    metadata = _map(_map(obj).get("metadata"))
    return Request(
        uid=uid,
        operation=operation,
        kind=kind,
        namespace=_str(request.get("namespace")) or _str(metadata.get("namespace")),
        name=_str(request.get("name")) or _str(metadata.get("name")),
        obj=_map(obj),
        old=_map(old),
        username=_str(user.get("username")),
        groups=tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else (),
        extra=extra,
    )


def _expect_kind(req: Request, kind: str, webhook: str) -> None:
    if req.kind != kind:
        raise Denied(
            f"request.kind: the {webhook} webhook reviews {kind} objects, not {req.kind}", 400
        )


def _annotations(obj: Mapping[str, Any], where: str = "request.object") -> Mapping[str, Any]:
    """metadata.annotations of `obj`; `where` names the object in a refusal."""
    metadata = obj.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise Denied(f"{where}.metadata must be an object", 400)
    annotations = metadata.get("annotations")
    if annotations is None:
        return {}
    if not isinstance(annotations, Mapping):
        raise Denied(f"{where}.metadata.annotations must be a map of strings", 400)
    return annotations


# --- Principals: who created the object ----------------------------------------------------------


def principal(req: Request, *, with_pod: bool) -> dict[str, Any]:
    """The stamp for the authenticated user: username, groups and (tasks) the pod extras."""
    if not req.username:
        raise Denied("request.userInfo.username is empty: only an authenticated user can do this")
    stamp: dict[str, Any] = {"username": req.username, "groups": list(req.groups)}
    if with_pod:
        for key, extra in (("podName", POD_NAME_EXTRA), ("podUID", POD_UID_EXTRA)):
            values = req.extra.get(extra) or ()
            if values:
                stamp[key] = values[0]
    return stamp


def stamp_text(stamp: Mapping[str, Any]) -> str:
    return json.dumps(stamp, sort_keys=True, separators=(",", ":"))


def _same(raw: Any, stamp: Mapping[str, Any]) -> bool:
    if not isinstance(raw, str):
        return False
    try:
        return bool(json.loads(raw) == stamp)
    except ValueError:
        return False


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _stamp(req: Request, key: str, stamp: Mapping[str, Any], who: str) -> Outcome:
    """Mutating: add the stamp; refuse a client-set value; restore it if an update dropped it."""
    field_ = f"metadata.annotations[{key}]"
    annotations = _annotations(req.obj)
    if req.operation == "UPDATE":
        old = _annotations(req.old, "request.oldObject").get(key)
        if key in annotations or old is None:
            return ALLOW  # a change is refused by the validating webhook, with the same message
        return Outcome(True, patch=_add_annotation(req.obj, key, old))
    if req.operation != "CREATE":
        return ALLOW
    if key in annotations:
        if _same(annotations[key], stamp):
            return ALLOW
        raise Denied(
            f"{field_}: set by admission from the authenticated {who}; clients cannot set it"
        )
    return Outcome(True, patch=_add_annotation(req.obj, key, stamp_text(stamp)))


def _add_annotation(obj: Mapping[str, Any], key: str, value: str) -> tuple[dict[str, Any], ...]:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return ({"op": "add", "path": "/metadata", "value": {"annotations": {key: value}}},)
    if not isinstance(metadata.get("annotations"), Mapping):
        return ({"op": "add", "path": "/metadata/annotations", "value": {key: value}},)
    return ({"op": "add", "path": f"/metadata/annotations/{_escape(key)}", "value": value},)


def _check_stamped(req: Request, key: str, stamp: Mapping[str, Any], who: str) -> None:
    """Validating: the stored value must be exactly what admission stamps for this user."""
    field_ = f"metadata.annotations[{key}]"
    annotations = _annotations(req.obj)
    if req.operation == "UPDATE":
        if annotations.get(key) != _annotations(req.old, "request.oldObject").get(key):
            raise Denied(
                f"{field_}: set by admission from the authenticated {who} at creation; "
                "clients cannot change or remove it"
            )
        return
    if key not in annotations:
        raise Denied(
            f"{field_}: missing; it is set by the mutating webhook from the authenticated {who}, "
            "and the object cannot be admitted without it"
        )
    if not _same(annotations[key], stamp):
        raise Denied(
            f"{field_}: set by admission from the authenticated {who}; clients cannot set it"
        )


# --- AgentTask -----------------------------------------------------------------------------------


def mutate_task(req: Request, facts: Facts) -> Outcome:
    _expect_kind(req, "AgentTask", MUTATE_TASKS)
    if req.operation not in ("CREATE", "UPDATE"):
        return ALLOW
    stamp = principal(req, with_pod=True) if req.operation == "CREATE" else {}
    return _stamp(req, REQUESTER_ANNOTATION, stamp, "user who created the task")


def validate_task(req: Request, facts: Facts) -> Outcome:
    _expect_kind(req, "AgentTask", VALIDATE_TASKS)
    if req.operation == "UPDATE":
        _check_stamped(req, REQUESTER_ANNOTATION, {}, "user who created the task")
        _check_task_immutable(_map(req.old.get("spec")), req.obj.get("spec"))
        return ALLOW
    if req.operation != "CREATE":
        return ALLOW
    _check_stamped(
        req, REQUESTER_ANNOTATION, principal(req, with_pod=True), "user who created the task"
    )
    task = _task_request(req.namespace, req.name, req.obj.get("spec"))
    if facts.error:
        raise Denied(f"request.namespace: {facts.error}")
    if task.delegated_from:
        _check_delegation(req, task, facts)
        return ALLOW
    ok, message = policy.requester_allowed(task, req.username, req.groups, facts.policies)
    if not ok:
        raise Denied(message)
    return ALLOW


def _task_request(namespace: str, name: str, spec: Any) -> policy.TaskRequest:
    if not isinstance(spec, Mapping):
        raise Denied("request.object.spec is required and must be an object", 400)
    try:
        return policy.task_request(namespace, name, spec)
    except ValueError as err:
        message = str(err)
        if "spec." not in message:
            message = f"spec.*: {message}"
        raise Denied(message, 400) from None


def _check_task_immutable(old: Mapping[str, Any], new: Any) -> None:
    new = _map(new)
    for key in sorted(set(old) | set(new)):
        if key == "completed":
            continue
        if old.get(key) != new.get(key):
            raise Denied(
                f"spec.{key}: the spec of an AgentTask is immutable after creation except "
                "spec.completed; create a new AgentTask instead"
            )
    if old.get("completed") is True and new.get("completed") is not True:
        raise Denied(
            "spec.completed may only change from false to true: a completed task cannot be "
            "reopened; create a new AgentTask"
        )


def _check_delegation(req: Request, child: policy.TaskRequest, facts: Facts) -> None:
    parent_name = child.delegated_from or ""
    parent = facts.tasks.get(parent_name)
    if parent is None:
        raise Denied(
            f"spec.delegatedFrom: parent task {parent_name} does not exist in namespace "
            f"{req.namespace}; a task can only be delegated from an existing task"
        )
    phase = _map(parent.get("status")).get("phase")
    pspec = _map(parent.get("spec"))
    if phase in TERMINAL or pspec.get("completed") is True:
        state = phase if phase in TERMINAL else "completed"
        raise Denied(
            f"spec.delegatedFrom: parent task {parent_name} is {state}; "
            "a task can only be delegated from a live task"
        )
    parent_sa = _str(_map(pspec.get("agent")).get("serviceAccountName"))
    owner = f"system:serviceaccount:{req.namespace}:{parent_sa}"
    if req.username != owner:
        raise Denied(
            f"metadata.annotations[{REQUESTER_ANNOTATION}]: a delegated task must be created by "
            f"its parent's agent service account {owner}, not by {req.username}"
        )
    try:
        parent_req = policy.task_request(req.namespace, parent_name, pspec)
    except ValueError as err:
        raise Denied(f"spec.delegatedFrom: parent task {parent_name} is invalid ({err})") from None
    pol = _parent_policy(parent, parent_req, facts.policies)
    if pol is None:
        raise Denied(
            f"spec.delegatedFrom: no AgentPolicy in namespace {req.namespace} allows parent task "
            f"{parent_name}, so nothing can be delegated from it"
        )
    allowed, max_depth = policy.delegation_limits(pol)
    pol_name = _str(_map(pol.get("metadata")).get("name"))
    if not allowed:
        raise Denied(
            f"spec.delegatedFrom: policy {pol_name} of parent task {parent_name} does not allow "
            "delegation (spec.delegation.allowed)"
        )
    violation = policy.narrowing_violation(
        child,
        parent_req,
        parent_depth=_depth(parent_name, facts),
        max_depth=max_depth,
        child_expires_at=0.0,
        parent_expires_at=0.0,
    )
    if violation:
        raise Denied(violation.rstrip("."))


def _parent_policy(
    parent: Mapping[str, Any], parent_req: policy.TaskRequest, policies: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The policy that decided the parent (status.decision.policy), else the one that would."""
    name = _map(_map(parent.get("status")).get("decision")).get("policy")
    if not name:
        name = policy.evaluate(parent_req, policies).policy
    for pol in policies:
        if _map(pol.get("metadata")).get("name") == name and name:
            return pol
    return None


def _depth(parent_name: str, facts: Facts) -> int:
    """How many delegations lie above the parent (0 for a root task)."""
    seen = {parent_name}
    depth = 0
    name = delegated_from(facts.tasks.get(parent_name))
    while name:
        if name in seen:
            raise Denied(f"spec.delegatedFrom: the delegation chain above {parent_name} loops")
        if name not in facts.tasks:
            return MAX_CHAIN  # longer than we read: deeper than any maxDepth
        ancestor = facts.tasks[name]
        if ancestor is None:
            raise Denied(
                f"spec.delegatedFrom: task {name}, an ancestor of parent task {parent_name}, no "
                "longer exists; the delegation chain is broken"
            )
        seen.add(name)
        depth += 1
        name = delegated_from(ancestor)
    return depth


# --- AgentApproval -------------------------------------------------------------------------------


def mutate_approval(req: Request, facts: Facts) -> Outcome:
    _expect_kind(req, "AgentApproval", MUTATE_APPROVALS)
    if req.operation not in ("CREATE", "UPDATE"):
        return ALLOW
    stamp = principal(req, with_pod=False) if req.operation == "CREATE" else {}
    return _stamp(req, APPROVER_ANNOTATION, stamp, "approver")


def validate_approval(req: Request, facts: Facts) -> Outcome:
    _expect_kind(req, "AgentApproval", VALIDATE_APPROVALS)
    if req.operation == "UPDATE":
        _check_stamped(req, APPROVER_ANNOTATION, {}, "approver")
        old, new = _map(req.old.get("spec")), _map(req.obj.get("spec"))
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key) != new.get(key):
                raise Denied(
                    f"spec.{key}: an AgentApproval is immutable, bound to one task spec; create a "
                    "new AgentApproval instead"
                )
        return ALLOW
    if req.operation != "CREATE":
        return ALLOW
    _check_stamped(req, APPROVER_ANNOTATION, principal(req, with_pod=False), "approver")
    spec = req.obj.get("spec")
    if not isinstance(spec, Mapping):
        raise Denied("request.object.spec is required and must be an object", 400)
    task_name = spec.get("taskName")
    if not isinstance(task_name, str) or not task_name:
        raise Denied("spec.taskName must name an AgentTask in the same namespace", 400)
    if spec.get("decision") not in ("approve", "deny"):
        raise Denied("spec.decision must be approve or deny", 400)
    if not isinstance(spec.get("specHash"), str):
        raise Denied("spec.specHash must be the task's status.specHash (sha256:...)", 400)
    if facts.error:
        raise Denied(f"request.namespace: {facts.error}")
    task = facts.tasks.get(task_name)
    if task is None:
        raise Denied(
            f"spec.taskName: AgentTask {task_name} does not exist in namespace {req.namespace}"
        )
    for check in (_check_task_live, _check_separation, _check_approver, _check_spec_hash):
        check(req, spec, task, facts)
    return ALLOW


def _check_task_live(
    req: Request, spec: Mapping[str, Any], task: Mapping[str, Any], facts: Facts
) -> None:
    phase = _map(task.get("status")).get("phase")
    if phase in TERMINAL:
        raise Denied(
            f"spec.taskName: task {spec['taskName']} is {phase}; a finished task cannot be "
            "approved or denied"
        )


def _check_separation(
    req: Request, spec: Mapping[str, Any], task: Mapping[str, Any], facts: Facts
) -> None:
    requester = approvals.requester_username(
        _annotations(task, "spec.taskName").get(REQUESTER_ANNOTATION)
    )
    if requester and req.username == requester:
        raise Denied(
            f"request.userInfo.username: {req.username} requested task {spec['taskName']} and "
            "cannot approve it (separation of duties)"
        )
    sa = _str(_map(_map(task.get("spec")).get("agent")).get("serviceAccountName"))
    if req.username == f"system:serviceaccount:{req.namespace}:{sa}":
        raise Denied(
            f"request.userInfo.username: {req.username} is the agent of task "
            f"{spec['taskName']} and cannot approve its own access (separation of duties)"
        )


def _check_approver(
    req: Request, spec: Mapping[str, Any], task: Mapping[str, Any], facts: Facts
) -> None:
    name = spec["taskName"]
    pol = task_policy(req.namespace, task, facts.policies)
    if pol is None:
        raise Denied(
            f"spec.taskName: no AgentPolicy in namespace {req.namespace} allows task {name}, so "
            "there is nothing to approve"
        )
    if not policy.approver_allowed(pol, req.username, req.groups):
        pol_name = _map(pol.get("metadata")).get("name")
        raise Denied(
            f"request.userInfo.username: {req.username} is not listed in spec.approvers of "
            f"policy {pol_name}, which covers task {name}"
        )


def _check_spec_hash(
    req: Request, spec: Mapping[str, Any], task: Mapping[str, Any], facts: Facts
) -> None:
    expected = current_spec_hash(task)
    if spec.get("specHash") != expected:
        raise Denied(
            f"spec.specHash: {spec.get('specHash')} does not match status.specHash {expected} of "
            f"task {spec['taskName']}; an approval binds to one exact task spec"
        )


def current_spec_hash(task: Mapping[str, Any]) -> str:
    """status.specHash, or what the operator will write there (the spec is immutable)."""
    recorded = _map(task.get("status")).get("specHash")
    if isinstance(recorded, str) and recorded:
        return recorded
    return policy.spec_hash(_map(task.get("spec")))


def task_policy(
    namespace: str, task: Mapping[str, Any], policies: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The policy whose approvers and approvalTTL apply to a task: the one the reconciler uses
    (policy.evaluate over the namespace's policies), or None when none allows the task."""
    name = _str(_map(task.get("metadata")).get("name"))
    try:
        req = policy.task_request(namespace, name, _map(task.get("spec")))
    except ValueError:
        return None
    decision = policy.evaluate(req, policies)
    if not decision.allowed:
        return None
    for pol in policies:
        if _map(pol.get("metadata")).get("name") == decision.policy:
            return pol
    return None


def approval_status(
    approval: Mapping[str, Any],
    task: Mapping[str, Any] | None,
    policies: Sequence[Mapping[str, Any]],
    now: float,
) -> dict[str, Any]:
    """AgentApproval status: {approver, approvedAt, expiresAt, valid, reason}.

    Valid exactly when approvals.judge (what the reconciler applies) counts it; `reason` is a
    CamelCase code and the sentence, e.g. "Expired: the approval expired (...)". Never raises.
    """
    try:
        return _approval_status(approval, task, policies, now)
    except Exception as e:
        return {
            "valid": False,
            "reason": f"Invalid: the approval could not be judged ({type(e).__name__})",
        }


def _approval_status(
    approval: Mapping[str, Any],
    task: Mapping[str, Any] | None,
    policies: Sequence[Mapping[str, Any]],
    now: float,
) -> dict[str, Any]:
    md = _map(approval.get("metadata"))
    username, _ = approvals.parse_principal(
        _str(_map(md.get("annotations")).get(APPROVER_ANNOTATION))
    )
    out: dict[str, Any] = {"approver": f"user:{username}" if username else ""}
    created = _str(md.get("creationTimestamp"))
    if created:
        out["approvedAt"] = created
    if task is None:
        return {**out, "valid": False, "reason": "TaskNotFound: the AgentTask does not exist"}
    ns = _str(md.get("namespace")) or _str(_map(task.get("metadata")).get("namespace"))
    pol = task_policy(ns, task, policies)
    if created:
        out["expiresAt"] = timeutil.rfc3339(timeutil.parse(created) + approvals.approval_ttl(pol))
    requester = approvals.requester_username(
        _annotations(task, "spec.taskName").get(REQUESTER_ANNOTATION)
    )
    valid, sentence = approvals.judge(
        approval, spec_hash=current_spec_hash(task), requester=requester, pol=pol, now=now
    )
    if valid:
        code = "Valid"
    elif not username:
        code = "NotStamped"
    elif "specHash" in sentence:
        code = "SpecHashMismatch"
    elif "cannot approve" in sentence:
        code = "SelfApproval"
    elif "expired" in sentence:
        code = "Expired"
    else:
        code = "NotAnApprover"
    return {**out, "valid": valid, "reason": f"{code}: {sentence}"}


# --- Pods ----------------------------------------------------------------------------------------


def mutate_pod(req: Request, facts: Facts) -> Outcome:
    _expect_kind(req, "Pod", MUTATE_PODS)
    if req.operation != "CREATE":
        return ALLOW
    task = _annotations(req.obj).get(TASK_ANNOTATION)
    if task is None:
        return ALLOW
    if not isinstance(task, str) or not _NAME.match(task) or len(task) > 63:
        raise Denied(
            f"metadata.annotations[{TASK_ANNOTATION}]: {task!r} is not an AgentTask name "
            "(a DNS subdomain of at most 63 characters)",
            400,
        )
    spec = req.obj.get("spec")
    if not isinstance(spec, Mapping):
        raise Denied("request.object.spec is required and must be an object", 400)
    return Outcome(True, patch=tuple(_pod_patch(spec, task)))


def _pod_patch(spec: Mapping[str, Any], task: str) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    volume = {
        "name": CREDENTIAL_VOLUME,
        "secret": {"secretName": task + CREDENTIAL_SUFFIX, "optional": True},
    }
    volumes = spec.get("volumes")
    if not isinstance(volumes, list):
        ops.append({"op": "add", "path": "/spec/volumes", "value": [volume]})
    elif not any(_map(v).get("name") == CREDENTIAL_VOLUME for v in volumes):
        ops.append({"op": "add", "path": "/spec/volumes/-", "value": volume})
    mount = {"name": CREDENTIAL_VOLUME, "mountPath": CREDENTIAL_MOUNT_PATH, "readOnly": True}
    env = {"name": TOKEN_FILE_ENV, "value": TOKEN_FILE}
    for kind in ("initContainers", "containers"):
        containers = spec.get(kind)
        if not isinstance(containers, list):
            continue
        for i, raw in enumerate(containers):
            container = _map(raw)
            base = f"/spec/{kind}/{i}"
            mounts = container.get("volumeMounts")
            if not isinstance(mounts, list):
                ops.append({"op": "add", "path": f"{base}/volumeMounts", "value": [mount]})
            elif not any(
                _map(m).get("name") == CREDENTIAL_VOLUME
                or _str(_map(m).get("mountPath")).rstrip("/") == CREDENTIAL_MOUNT_PATH.rstrip("/")
                for m in mounts
            ):
                ops.append({"op": "add", "path": f"{base}/volumeMounts/-", "value": mount})
            envs = container.get("env")
            if not isinstance(envs, list):
                ops.append({"op": "add", "path": f"{base}/env", "value": [env]})
            elif not any(_map(e).get("name") == TOKEN_FILE_ENV for e in envs):
                ops.append({"op": "add", "path": f"{base}/env/-", "value": env})
    return ops


def credential_refs(pod: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(field path, Secret name, task name) for every reference to a `<task>-credential` Secret:
    secret and projected volumes, env valueFrom.secretKeyRef and envFrom.secretRef."""
    spec = _map(pod.get("spec"))
    refs: list[tuple[str, str]] = []
    volumes = spec.get("volumes")
    for i, raw in enumerate(volumes if isinstance(volumes, list) else []):
        vol = _map(raw)
        refs.append(
            (
                f"spec.volumes[{i}].secret.secretName",
                _str(_map(vol.get("secret")).get("secretName")),
            )
        )
        sources = _map(vol.get("projected")).get("sources")
        for j, src in enumerate(sources if isinstance(sources, list) else []):
            name = _str(_map(_map(src).get("secret")).get("name"))
            refs.append((f"spec.volumes[{i}].projected.sources[{j}].secret.name", name))
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        containers = spec.get(kind)
        for i, raw in enumerate(containers if isinstance(containers, list) else []):
            container = _map(raw)
            envs = container.get("env")
            for j, env in enumerate(envs if isinstance(envs, list) else []):
                ref = _map(_map(_map(env).get("valueFrom")).get("secretKeyRef"))
                refs.append(
                    (
                        f"spec.{kind}[{i}].env[{j}].valueFrom.secretKeyRef.name",
                        _str(ref.get("name")),
                    )
                )
            env_from = container.get("envFrom")
            for j, src in enumerate(env_from if isinstance(env_from, list) else []):
                ref = _map(_map(src).get("secretRef"))
                refs.append(
                    (f"spec.{kind}[{i}].envFrom[{j}].secretRef.name", _str(ref.get("name")))
                )
    return [
        (path, name, name[: -len(CREDENTIAL_SUFFIX)])
        for path, name in refs
        if name.endswith(CREDENTIAL_SUFFIX) and len(name) > len(CREDENTIAL_SUFFIX)
    ]


def validate_pod(req: Request, facts: Facts) -> Outcome:
    _expect_kind(req, "Pod", VALIDATE_PODS)
    if req.operation != "CREATE":
        return ALLOW
    refs = credential_refs(req.obj)
    if refs and facts.error:
        raise Denied(f"request.namespace: {facts.error}")
    spec = _map(req.obj.get("spec"))
    runs_as = _str(spec.get("serviceAccountName")) or _str(spec.get("serviceAccount")) or "default"
    for path, secret, task_name in refs:
        task = facts.tasks.get(task_name)
        if task is None:
            continue  # not a task's credential (no such AgentTask in this namespace)
        sa = _str(_map(_map(task.get("spec")).get("agent")).get("serviceAccountName"))
        if sa != runs_as:
            raise Denied(
                f"{path}: Secret {secret} holds the credential of AgentTask {task_name}, which "
                f"only a pod running as its service account {sa or '<none>'} may mount; this pod "
                f"runs as {runs_as} (spec.serviceAccountName)"
            )
    return ALLOW


# --- Registry ------------------------------------------------------------------------------------

_REVIEWS: dict[str, Callable[[Request, Facts], Outcome]] = {
    MUTATE_TASKS: mutate_task,
    VALIDATE_TASKS: validate_task,
    MUTATE_APPROVALS: mutate_approval,
    VALIDATE_APPROVALS: validate_approval,
    MUTATE_PODS: mutate_pod,
    VALIDATE_PODS: validate_pod,
}


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."
