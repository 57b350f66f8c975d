"""Admission: pure reviews of AdmissionReview requests, one module per kind of object.

- `envelope`: the request (`parse`), the response (`envelope`), Needs/Facts/Outcome/Denied.
- `stamping`: the requester/approver annotations only admission may write.
- `task_review`, `approval_review`, `pod_review`: the mutate and validate review of each kind.
- `dispatch`: webhook name -> review; `needs`, `decide`, `review`.

A review says what it `needs`; a service (taskwarden.server.reads) reads exactly that into
`Facts`; a pure `decide` answers and never raises. Nothing here imports kubernetes, kopf or
aiohttp. This module re-exports the API that callers outside the package use.
"""

from __future__ import annotations

from taskwarden.admission.dispatch import decide, needs, review
from taskwarden.admission.envelope import (
    MAX_MESSAGE,
    MUTATE_APPROVALS,
    MUTATE_PODS,
    MUTATE_TASKS,
    POD_NAME_EXTRA,
    POD_UID_EXTRA,
    VALIDATE_APPROVALS,
    VALIDATE_PODS,
    VALIDATE_TASKS,
    WEBHOOKS,
    Denied,
    Facts,
    Needs,
    Outcome,
    Request,
    parse,
    request_uid,
    response,
)
from taskwarden.admission.pod_review import credential_refs
from taskwarden.admission.stamping import stamp_text

__all__ = [
    "MAX_MESSAGE",
    "MUTATE_APPROVALS",
    "MUTATE_PODS",
    "MUTATE_TASKS",
    "POD_NAME_EXTRA",
    "POD_UID_EXTRA",
    "VALIDATE_APPROVALS",
    "VALIDATE_PODS",
    "VALIDATE_TASKS",
    "WEBHOOKS",
    "Denied",
    "Facts",
    "Needs",
    "Outcome",
    "Request",
    "credential_refs",
    "decide",
    "needs",
    "parse",
    "request_uid",
    "response",
    "review",
    "stamp_text",
]
