"""Policy decisions: does an AgentPolicy allow an AgentTask, who may request or approve it, and
may a task be delegated from another?

The package is pure and stdlib only: policies and tasks are plain API dicts, nothing here reads
the clock or calls the API. Start reading at `evaluation` (the ordered named checks); the
others are what it stands on:

- `globs`: resource patterns, matching and language inclusion ("covers").
- `spec`: `TaskRequest` (a validated AgentTask spec), `task_request`, `triples`, `spec_hash`.
- `rules`: reading AgentPolicy bodies (which apply to a task, their rules parsed).
- `evaluation`: `evaluate` and `evaluate_policy` return a `Decision` with a CamelCase reason.
- `principals`: `requester_allowed` and `approver_allowed`.
- `narrowing`: is a child task a narrowing of its parent (`narrowing_violation`).
- `delegation`: the one decision for a delegated task, used by admission and the controller.

This `__init__` re-exports the public API so callers can keep writing `policy.evaluate(...)`;
modules inside the package import the submodules directly.
"""

from __future__ import annotations

from taskwarden import names
from taskwarden.policy import delegation
from taskwarden.policy.evaluation import (
    Decision,
    covering_policies,
    evaluate,
    evaluate_policy,
)
from taskwarden.policy.globs import glob_covers, glob_match
from taskwarden.policy.narrowing import clamp_expiry, delegation_limits, narrowing_violation
from taskwarden.policy.principals import (
    REQUESTER_FIELD,
    approver_allowed,
    is_service_account,
    requester_allowed,
)
from taskwarden.policy.spec import Scope, TaskRequest, spec_hash, task_request, triples

DATA_CLASSES = names.DATA_CLASSES
"""Re-exported from `names` (its one home) for callers that still read `policy.DATA_CLASSES`."""

__all__ = [
    "DATA_CLASSES",
    "REQUESTER_FIELD",
    "Decision",
    "Scope",
    "TaskRequest",
    "approver_allowed",
    "clamp_expiry",
    "covering_policies",
    "delegation",
    "delegation_limits",
    "evaluate",
    "evaluate_policy",
    "glob_covers",
    "glob_match",
    "is_service_account",
    "narrowing_violation",
    "requester_allowed",
    "spec_hash",
    "task_request",
    "triples",
]
