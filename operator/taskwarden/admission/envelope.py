"""The AdmissionReview envelope: what every review reads and answers, whatever its kind.

Used by the review modules of this package (task_review, approval_review, pod_review) and by
`dispatch`. Pure: an AdmissionReview body in, a typed `Request` out (`parse`, which refuses a
malformed body with a `Denied` naming the field); an `Outcome` in, an AdmissionReview response
out (`response`). `Needs` and `Facts` carry what a review must read from the API and what was
read, so the reading service (taskwarden.server.reads) stays outside this package.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

MAX_MESSAGE: Final = 1500
"""Refusal messages are clipped to this many characters (the apiserver shows them whole)."""

MUTATE_TASKS: Final = "mutate-agenttasks"
VALIDATE_TASKS: Final = "validate-agenttasks"
MUTATE_APPROVALS: Final = "mutate-agentapprovals"
VALIDATE_APPROVALS: Final = "validate-agentapprovals"
MUTATE_PODS: Final = "mutate-pods"
VALIDATE_PODS: Final = "validate-pods"
WEBHOOKS: Final = (
    MUTATE_TASKS,
    VALIDATE_TASKS,
    MUTATE_APPROVALS,
    VALIDATE_APPROVALS,
    MUTATE_PODS,
    VALIDATE_PODS,
)
"""Webhook names; each is served at `/<name>` and used as the metrics label."""

POD_NAME_EXTRA: Final = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA: Final = "authentication.kubernetes.io/pod-uid"
"""userInfo.extra keys of a pod-bound ServiceAccount token."""


# --- Inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Needs:
    """What a review must read from the API before it can decide."""

    namespace: str
    policies: bool = False
    tasks: tuple[str, ...] = ()
    follow_delegation: bool = False
    """Also read the spec.delegatedFrom chain above each task, as policy.delegation.next_to_read
    asks."""
    secrets: tuple[str, ...] = ()
    """Secrets to read by name (their type and metadata only, never their data)."""


@dataclass(frozen=True)
class Facts:
    """What was read: AgentPolicies of the namespace, AgentTasks and Secrets (type and metadata)
    by name (None: not found; a name absent from `tasks` or `secrets` was not read). `error`
    says why reading failed: the review denies."""

    policies: tuple[Mapping[str, Any], ...] = ()
    tasks: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    secrets: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    error: str = ""
    issuer: str = ""
    """The operator's issuer: the audience of the ServiceAccount token an exchange-mode pod gets."""


@dataclass(frozen=True)
class Request:
    """The parts of an AdmissionReview request the checks read, type-checked."""

    uid: str
    operation: str
    kind: str
    sub_resource: str
    """request.subResource, e.g. `ephemeralcontainers` for `kubectl debug` ('' for none)."""
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


ALLOW: Final = Outcome(True)


# --- Reading the request -------------------------------------------------------------------------


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def request_uid(body: Any) -> str:
    request = body.get("request") if isinstance(body, Mapping) else None
    uid = request.get("uid") if isinstance(request, Mapping) else None
    return uid if isinstance(uid, str) else ""


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
    kind = as_map(request.get("kind")).get("kind")
    if not isinstance(kind, str) or not kind:
        raise Denied("request.kind.kind is required", 400)
    obj, old = request.get("object"), request.get("oldObject")
    if operation in ("CREATE", "UPDATE") and not isinstance(obj, Mapping):
        raise Denied(f"request.object is required for {operation}", 400)
    if operation == "UPDATE" and not isinstance(old, Mapping):
        raise Denied("request.oldObject is required for UPDATE", 400)
    user = as_map(request.get("userInfo"))
    groups = user.get("groups")
    extra = {
        str(key): tuple(v for v in values if isinstance(v, str))
        for key, values in as_map(user.get("extra")).items()
        if isinstance(values, list)
    }
    metadata = as_map(as_map(obj).get("metadata"))
    return Request(
        uid=uid,
        operation=str(operation),
        kind=kind,
        sub_resource=as_str(request.get("subResource")),
        namespace=as_str(request.get("namespace")) or as_str(metadata.get("namespace")),
        name=as_str(request.get("name")) or as_str(metadata.get("name")),
        obj=as_map(obj),
        old=as_map(old),
        username=as_str(user.get("username")),
        groups=tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else (),
        extra=extra,
    )


def expect_kind(req: Request, kind: str, webhook: str) -> None:
    if req.kind != kind:
        raise Denied(
            f"request.kind: the {webhook} webhook reviews {kind} objects, not {req.kind}", 400
        )


def annotations_of(obj: Mapping[str, Any], where: str = "request.object") -> Mapping[str, Any]:
    """metadata.annotations of `obj`; `where` names the object in a refusal."""
    metadata = obj.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise Denied(f"{where}.metadata must be an object", 400)
    found = metadata.get("annotations")
    if found is None:
        return {}
    if not isinstance(found, Mapping):
        raise Denied(f"{where}.metadata.annotations must be a map of strings", 400)
    return found


# --- Answering -----------------------------------------------------------------------------------


def clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def response(uid: str, outcome: Outcome) -> dict[str, Any]:
    """The AdmissionReview response carrying `outcome` for the request `uid`."""
    answer: dict[str, Any] = {"uid": uid, "allowed": outcome.allowed}
    if not outcome.allowed:
        answer["status"] = {
            "status": "Failure",
            "code": outcome.code,
            "reason": {400: "BadRequest", 404: "NotFound"}.get(outcome.code, "Forbidden"),
            "message": outcome.message,
        }
    elif outcome.patch:
        raw = json.dumps(list(outcome.patch), separators=(",", ":")).encode()
        answer["patchType"] = "JSONPatch"
        answer["patch"] = base64.b64encode(raw).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": answer}
