"""The six admission webhooks: which review answers each, what it needs, and its verdict.

Called by the HTTPS server (taskwarden.server.https), which first asks `needs` what to read from
the API (policies of the namespace, tasks by name, the delegation chain), reads it into
`envelope.Facts` (taskwarden.server.reads), then calls `decide` and wraps the outcome with
`envelope.response` (or calls `review`, which does both). Everything here is pure and never
raises: a malformed or hostile request, or a bug, becomes a clean denial whose message names
the field (`spec.`, `metadata.` or `request.`) and the rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from taskwarden.admission import approval_review, envelope, pod_review, task_review

Review = Callable[[envelope.Request, envelope.Facts], envelope.Outcome]
Needs = Callable[[envelope.Request], envelope.Needs | None]

REVIEWS: Final[dict[str, tuple[str, Review, Needs | None]]] = {
    envelope.MUTATE_TASKS: ("AgentTask", task_review.mutate, None),
    envelope.VALIDATE_TASKS: ("AgentTask", task_review.validate, task_review.needs),
    envelope.MUTATE_APPROVALS: (
        "AgentApproval",
        approval_review.mutate,
        approval_review.task_needs,
    ),
    envelope.VALIDATE_APPROVALS: ("AgentApproval", approval_review.validate, approval_review.needs),
    envelope.MUTATE_PODS: ("Pod", pod_review.mutate, pod_review.mutate_needs),
    envelope.VALIDATE_PODS: ("Pod", pod_review.validate, pod_review.needs),
}
"""webhook -> (kind it reviews, review, what it reads before a CREATE (the pod guard: also an
ephemeralcontainers UPDATE) or None)."""


def review(webhook: str, body: Any, facts: envelope.Facts | None = None) -> dict[str, Any]:
    """The AdmissionReview response for `body`; never raises."""
    return envelope.response(
        envelope.request_uid(body), decide(webhook, body, facts or envelope.Facts())
    )


def decide(webhook: str, body: Any, facts: envelope.Facts) -> envelope.Outcome:
    """The verdict for one AdmissionReview; never raises."""
    try:
        entry = REVIEWS.get(webhook)
        if entry is None:
            raise envelope.Denied(
                f"request.path: no admission webhook is served at /{webhook}", 404
            )
        return entry[1](envelope.parse(body), facts)
    except envelope.Denied as d:
        return envelope.Outcome(False, envelope.clip(d.message), d.code)
    except Exception as e:  # a bug must refuse cleanly, never crash or return HTTP 500
        return envelope.Outcome(
            False,
            f"request.object: the {webhook} webhook could not review this object "
            f"({type(e).__name__}); it was refused to stay safe",
            400,
        )


def needs(webhook: str, body: Any) -> envelope.Needs | None:
    """What `webhook` must read before deciding on `body`; None when nothing. Never raises."""
    try:
        req = envelope.parse(body)
        entry = REVIEWS.get(webhook)
        if entry is None:
            return None
        kind, _, reads = entry
        if reads is None or req.kind != kind:
            return None
        if req.operation != "CREATE" and webhook != envelope.VALIDATE_PODS:
            return None  # the pod guard also reviews pods/ephemeralcontainers UPDATEs
        return reads(req)
    except Exception:
        return None
